//! Simulator configuration and how it is read from the environment.
//!
//! The environment arrives as a map so tests can pass one instead of mutating
//! the process environment. Parsing never panics: a bad value becomes a
//! [`ConfigError`] that names the variable.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

pub const ENV_LISTEN: &str = "AGENTMESH_SIM_LISTEN";
pub const ENV_MODEL: &str = "AGENTMESH_SIM_MODEL";
pub const ENV_TTFT_MS: &str = "AGENTMESH_SIM_TTFT_MS";
pub const ENV_INTER_TOKEN_MS: &str = "AGENTMESH_SIM_INTER_TOKEN_MS";
pub const ENV_MAX_CONCURRENCY: &str = "AGENTMESH_SIM_MAX_CONCURRENCY";
pub const ENV_MAX_WAITING: &str = "AGENTMESH_SIM_MAX_WAITING";
pub const ENV_DEFAULT_MAX_TOKENS: &str = "AGENTMESH_SIM_DEFAULT_MAX_TOKENS";
pub const ENV_FAILURE: &str = "AGENTMESH_SIM_FAILURE";
pub const ENV_EMBEDDING_DIM: &str = "AGENTMESH_SIM_EMBEDDING_DIM";
pub const ENV_STARTUP_DELAY_MS: &str = "AGENTMESH_SIM_STARTUP_DELAY_MS";
pub const ENV_LOAD_LATENCY_PCT: &str = "AGENTMESH_SIM_LOAD_LATENCY_PCT";

/// The most generation slots the simulator can hand out (tokio's semaphore
/// limit).
pub const MAX_CONCURRENCY_LIMIT: usize = tokio::sync::Semaphore::MAX_PERMITS;

/// The largest `load_latency_pct`: past it the latency model says nothing
/// a test could use, and the products stay far from overflow.
pub const MAX_LOAD_LATENCY_PCT: u32 = 10_000;

impl SimConfig {
    /// `base` stretched for `running` requests holding slots (see
    /// [`SimConfig::load_latency_pct`]).
    pub fn loaded(&self, base: Duration, running: usize) -> Duration {
        if self.load_latency_pct == 0 || base.is_zero() || running <= 1 {
            return base;
        }
        let others = u32::try_from(running - 1).unwrap_or(u32::MAX);
        let extra_pct = u64::from(self.load_latency_pct) * u64::from(others);
        let extra = base.as_nanos().saturating_mul(u128::from(extra_pct)) / 100;
        base.saturating_add(Duration::from_nanos(
            u64::try_from(extra).unwrap_or(u64::MAX),
        ))
    }
}

/// How the simulator misbehaves on purpose, so callers can test their
/// retry, fallback and stream-error paths against a real socket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FailureMode {
    /// Every request is served normally.
    #[default]
    None,
    /// Every chat request is answered with this HTTP status and an
    /// OpenAI-shaped error body.
    Always(u16),
    /// The first `n` chat requests are answered with the status, the rest
    /// are served normally.
    FirstN(u32, u16),
    /// Streaming responses send this many content tokens and then cut the
    /// connection without a finish chunk or `[DONE]`. A non-streaming
    /// response is cut before its body completes.
    BreakStreamAfter(u32),
    /// Every chat and embeddings request hangs without a byte of answer
    /// (not even the head) until the client gives up or the server shuts
    /// down: a stuck GPU worker, as a router's first-byte deadline sees it.
    Timeout,
    /// The first `n` requests hang like [`FailureMode::Timeout`], the rest
    /// are served normally.
    TimeoutFirstN(u32),
    /// A failure rate: every `n`th request (the `n`th, `2n`th, ...) is
    /// answered with the status, the others are served. Deterministic, so
    /// a test knows which requests fail.
    Every(u32, u16),
    /// Every `n`th request hangs like [`FailureMode::Timeout`].
    TimeoutEvery(u32),
}

/// Everything the simulator needs to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimConfig {
    /// Address [`crate::run`] binds; [`crate::serve`] ignores it.
    pub listen: SocketAddr,
    /// The one model name served; requests naming another model get 404.
    pub model: String,
    /// Time to first token.
    pub ttft: Duration,
    /// Delay between consecutive tokens after the first.
    pub inter_token: Duration,
    /// Requests being generated at once.
    pub max_concurrency: usize,
    /// Requests allowed to wait for a generation slot; beyond it, 429.
    pub max_waiting: usize,
    /// Tokens generated when the request names no `max_tokens`.
    pub default_max_tokens: u32,
    /// Deliberate misbehaviour.
    pub failure: FailureMode,
    /// Components of an embedding when the request names no `dimensions`.
    pub embedding_dim: usize,
    /// Model loading time after start: until it has passed, `/health`,
    /// `/v1/models`, chat and embeddings answer 503 (what a vLLM or TGI
    /// pod is while weights load, seen through a Service).
    pub startup_delay: Duration,
    /// Load-dependent latency, in percent of the base latency added per
    /// other running request: a request that starts a phase (prefill, or
    /// one decode step) while `r` requests hold generation slots (itself
    /// included) waits `base × (1 + pct/100 × (r − 1))`, for both `ttft`
    /// and `inter_token`. A batch on a GPU behaves roughly so: each decode
    /// step grows with the batch. 0 keeps latency flat.
    pub load_latency_pct: u32,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8000)),
            model: "sim-model".to_owned(),
            ttft: Duration::ZERO,
            inter_token: Duration::ZERO,
            max_concurrency: 64,
            max_waiting: 1024,
            default_max_tokens: 16,
            failure: FailureMode::None,
            embedding_dim: 64,
            startup_delay: Duration::ZERO,
            load_latency_pct: 0,
        }
    }
}

/// A configuration value that could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("invalid value {value:?} for {name}: {reason}")]
    Invalid {
        name: &'static str,
        value: String,
        reason: String,
    },
}

impl SimConfig {
    /// Reads the `AGENTMESH_SIM_*` variables from `env`; a variable that is
    /// absent keeps its default.
    pub fn from_env(env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let mut config = Self::default();
        if let Some(listen) = lookup(env, ENV_LISTEN) {
            config.listen = parse_with(ENV_LISTEN, listen, str::parse)?;
        }
        if let Some(model) = lookup(env, ENV_MODEL) {
            config.model = model.to_owned();
        }
        if let Some(ms) = lookup(env, ENV_TTFT_MS) {
            config.ttft = Duration::from_millis(parse_with(ENV_TTFT_MS, ms, str::parse)?);
        }
        if let Some(ms) = lookup(env, ENV_INTER_TOKEN_MS) {
            config.inter_token =
                Duration::from_millis(parse_with(ENV_INTER_TOKEN_MS, ms, str::parse)?);
        }
        if let Some(n) = lookup(env, ENV_MAX_CONCURRENCY) {
            config.max_concurrency = parse_with(ENV_MAX_CONCURRENCY, n, str::parse)?;
            if config.max_concurrency == 0 {
                // Zero slots would make every request wait forever.
                return Err(invalid(ENV_MAX_CONCURRENCY, n, "must be at least 1"));
            }
            if config.max_concurrency > MAX_CONCURRENCY_LIMIT {
                return Err(invalid(
                    ENV_MAX_CONCURRENCY,
                    n,
                    format!("must be at most {MAX_CONCURRENCY_LIMIT}"),
                ));
            }
        }
        if let Some(n) = lookup(env, ENV_MAX_WAITING) {
            config.max_waiting = parse_with(ENV_MAX_WAITING, n, str::parse)?;
        }
        if let Some(n) = lookup(env, ENV_DEFAULT_MAX_TOKENS) {
            config.default_max_tokens = parse_with(ENV_DEFAULT_MAX_TOKENS, n, str::parse)?;
            if config.default_max_tokens == 0 {
                return Err(invalid(ENV_DEFAULT_MAX_TOKENS, n, "must be at least 1"));
            }
        }
        if let Some(n) = lookup(env, ENV_EMBEDDING_DIM) {
            config.embedding_dim = parse_with(ENV_EMBEDDING_DIM, n, str::parse)?;
            if config.embedding_dim == 0 || config.embedding_dim > crate::embed::MAX_DIMENSIONS {
                return Err(invalid(
                    ENV_EMBEDDING_DIM,
                    n,
                    format!("must be between 1 and {}", crate::embed::MAX_DIMENSIONS),
                ));
            }
        }
        if let Some(ms) = lookup(env, ENV_STARTUP_DELAY_MS) {
            config.startup_delay =
                Duration::from_millis(parse_with(ENV_STARTUP_DELAY_MS, ms, str::parse)?);
        }
        if let Some(pct) = lookup(env, ENV_LOAD_LATENCY_PCT) {
            config.load_latency_pct = parse_with(ENV_LOAD_LATENCY_PCT, pct, str::parse)?;
            if config.load_latency_pct > MAX_LOAD_LATENCY_PCT {
                return Err(invalid(
                    ENV_LOAD_LATENCY_PCT,
                    pct,
                    format!("must be at most {MAX_LOAD_LATENCY_PCT}"),
                ));
            }
        }
        if let Some(mode) = lookup(env, ENV_FAILURE) {
            config.failure = parse_with(ENV_FAILURE, mode, parse_failure)?;
        }
        Ok(config)
    }
}

/// Parses `none`, `always:<status>`, `first:<n>:<status>`,
/// `break-after:<tokens>`, `timeout`, `first:<n>:timeout`,
/// `every:<n>:<status>` or `every:<n>:timeout`.
fn parse_failure(value: &str) -> Result<FailureMode, String> {
    let parts: Vec<&str> = value.trim().split(':').collect();
    match parts.as_slice() {
        ["none"] => Ok(FailureMode::None),
        ["timeout"] | ["always", "timeout"] => Ok(FailureMode::Timeout),
        ["first", n, "timeout"] => {
            let n = n.parse().map_err(|e| format!("request count {n:?}: {e}"))?;
            Ok(FailureMode::TimeoutFirstN(n))
        }
        ["every", n, kind] => {
            let n: u32 = n.parse().map_err(|e| format!("request count {n:?}: {e}"))?;
            if n == 0 {
                return Err("every:<n>: n must be at least 1".to_owned());
            }
            if *kind == "timeout" {
                Ok(FailureMode::TimeoutEvery(n))
            } else {
                Ok(FailureMode::Every(n, parse_status(kind)?))
            }
        }
        ["always", status] => Ok(FailureMode::Always(parse_status(status)?)),
        ["first", n, status] => {
            let n = n.parse().map_err(|e| format!("request count {n:?}: {e}"))?;
            Ok(FailureMode::FirstN(n, parse_status(status)?))
        }
        ["break-after", tokens] => {
            let tokens = tokens
                .parse()
                .map_err(|e| format!("token count {tokens:?}: {e}"))?;
            Ok(FailureMode::BreakStreamAfter(tokens))
        }
        _ => Err(
            "expected none, always:<status>, first:<n>:<status>, break-after:<tokens>, timeout, first:<n>:timeout, every:<n>:<status> or every:<n>:timeout"
                .to_owned(),
        ),
    }
}

/// Injected failures must look like failures, so only 4xx and 5xx pass.
fn parse_status(value: &str) -> Result<u16, String> {
    let status: u16 = value
        .parse()
        .map_err(|e| format!("status {value:?}: {e}"))?;
    if (400..=599).contains(&status) {
        Ok(status)
    } else {
        Err(format!("status {status} is not a 4xx or 5xx error status"))
    }
}

/// An empty variable counts as unset, as shells often export `VAR=`.
fn lookup<'a>(env: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    env.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
}

fn parse_with<T, E: std::fmt::Display>(
    name: &'static str,
    value: &str,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> Result<T, ConfigError> {
    parse(value).map_err(|e| invalid(name, value, e))
}

fn invalid(name: &'static str, value: &str, reason: impl std::fmt::Display) -> ConfigError {
    ConfigError::Invalid {
        name,
        value: value.to_owned(),
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn empty_env_gives_defaults() {
        let config = SimConfig::from_env(&HashMap::new()).expect("defaults are valid");
        assert_eq!(config, SimConfig::default());
        assert_eq!(config.listen, "127.0.0.1:8000".parse().expect("addr"));
        assert_eq!(config.model, "sim-model");
        assert_eq!(config.max_concurrency, 64);
        assert_eq!(config.max_waiting, 1024);
        assert_eq!(config.default_max_tokens, 16);
        assert_eq!(config.failure, FailureMode::None);
    }

    #[test]
    fn every_variable_is_read() {
        let config = SimConfig::from_env(&env(&[
            (ENV_LISTEN, "0.0.0.0:9100"),
            (ENV_MODEL, "llama-sim"),
            (ENV_TTFT_MS, "150"),
            (ENV_INTER_TOKEN_MS, "20"),
            (ENV_MAX_CONCURRENCY, "4"),
            (ENV_MAX_WAITING, "0"),
            (ENV_DEFAULT_MAX_TOKENS, "32"),
            (ENV_FAILURE, "first:3:500"),
            (ENV_STARTUP_DELAY_MS, "2500"),
            (ENV_LOAD_LATENCY_PCT, "25"),
        ]))
        .expect("valid env");
        assert_eq!(
            config,
            SimConfig {
                listen: "0.0.0.0:9100".parse().expect("addr"),
                model: "llama-sim".to_owned(),
                ttft: Duration::from_millis(150),
                inter_token: Duration::from_millis(20),
                max_concurrency: 4,
                max_waiting: 0,
                default_max_tokens: 32,
                failure: FailureMode::FirstN(3, 500),
                embedding_dim: 64,
                startup_delay: Duration::from_millis(2500),
                load_latency_pct: 25,
            }
        );
    }

    #[test]
    fn failure_modes_parse() {
        let cases = [
            ("none", FailureMode::None),
            ("always:503", FailureMode::Always(503)),
            ("first:3:500", FailureMode::FirstN(3, 500)),
            ("break-after:5", FailureMode::BreakStreamAfter(5)),
            ("timeout", FailureMode::Timeout),
            ("always:timeout", FailureMode::Timeout),
            ("first:2:timeout", FailureMode::TimeoutFirstN(2)),
            ("every:3:429", FailureMode::Every(3, 429)),
            ("every:4:timeout", FailureMode::TimeoutEvery(4)),
        ];
        for (text, want) in cases {
            let config = SimConfig::from_env(&env(&[(ENV_FAILURE, text)])).expect(text);
            assert_eq!(config.failure, want, "{text}");
        }
    }

    #[test]
    fn bad_values_name_the_variable() {
        let cases = [
            (ENV_LISTEN, "not-an-address"),
            (ENV_TTFT_MS, "-5"),
            (ENV_INTER_TOKEN_MS, "fast"),
            (ENV_MAX_CONCURRENCY, "0"),
            (ENV_MAX_WAITING, "many"),
            (ENV_DEFAULT_MAX_TOKENS, "0"),
            (ENV_FAILURE, "sometimes"),
            (ENV_FAILURE, "always:200"),
            (ENV_FAILURE, "always:abc"),
            (ENV_FAILURE, "first:x:500"),
            (ENV_FAILURE, "break-after:"),
            (ENV_FAILURE, "first:x:timeout"),
            (ENV_FAILURE, "every:0:500"),
            (ENV_FAILURE, "every:2:200"),
            (ENV_STARTUP_DELAY_MS, "soon"),
            (ENV_LOAD_LATENCY_PCT, "-1"),
            (ENV_LOAD_LATENCY_PCT, "10001"),
        ];
        for (name, value) in cases {
            let err = SimConfig::from_env(&env(&[(name, value)]))
                .expect_err(&format!("{name}={value} must be rejected"));
            let ConfigError::Invalid { name: got, .. } = &err;
            assert_eq!(*got, name);
            assert!(err.to_string().contains(name), "{err}");
        }
    }

    #[test]
    fn load_latency_grows_linearly_with_other_running_requests() {
        let base = Duration::from_millis(100);
        let flat = SimConfig::default();
        assert_eq!(flat.loaded(base, 50), base);
        let loaded = SimConfig {
            load_latency_pct: 50,
            ..SimConfig::default()
        };
        assert_eq!(loaded.loaded(base, 0), base);
        assert_eq!(loaded.loaded(base, 1), base, "alone: the base latency");
        assert_eq!(loaded.loaded(base, 3), Duration::from_millis(200));
        assert_eq!(loaded.loaded(Duration::ZERO, 100), Duration::ZERO);
        let extreme = SimConfig {
            load_latency_pct: MAX_LOAD_LATENCY_PCT,
            ..SimConfig::default()
        };
        assert!(extreme.loaded(Duration::from_secs(3600), usize::MAX) >= Duration::from_secs(3600));
    }

    #[test]
    fn empty_value_counts_as_unset() {
        let config = SimConfig::from_env(&env(&[(ENV_TTFT_MS, ""), (ENV_MODEL, " ")]))
            .expect("empty values fall back to defaults");
        assert_eq!(config, SimConfig::default());
    }
}
