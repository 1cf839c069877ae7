//! Configuration from environment variables, read from a map so tests pass
//! a map instead of mutating the process environment. Every value that is
//! present but malformed is an error naming the variable.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use mesh_bus::{BusConfig, RetryPolicy};

pub type Env = HashMap<String, String>;

/// A listener address on the loopback with a port the OS picks: what the
/// `ephemeral()` configurations of tests and `agentmesh up` bind.
pub const EPHEMERAL: std::net::SocketAddr = std::net::SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    0,
));

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{var}: {reason}")]
    Invalid { var: String, reason: String },
    #[error("{var} is required")]
    Missing { var: String },
}

/// The process environment as a map.
pub fn process_env() -> Env {
    std::env::vars().collect()
}

/// A value parsed with `FromStr`, or `default` when unset or empty.
pub fn parse_or<T: FromStr>(env: &Env, var: &str, default: T) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    match env.get(var).map(|v| v.trim()).filter(|v| !v.is_empty()) {
        None => Ok(default),
        Some(raw) => raw.parse().map_err(|e: T::Err| ConfigError::Invalid {
            var: var.to_owned(),
            reason: format!("{raw:?}: {e}"),
        }),
    }
}

/// A duration given in milliseconds (variables end in `_MS`).
pub fn millis_or(env: &Env, var: &str, default: Duration) -> Result<Duration, ConfigError> {
    let ms = parse_or(
        env,
        var,
        u64::try_from(default.as_millis()).unwrap_or(u64::MAX),
    )?;
    Ok(Duration::from_millis(ms))
}

pub fn string_or(env: &Env, var: &str, default: &str) -> String {
    env.get(var)
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
        .unwrap_or(default)
        .to_owned()
}

pub fn optional(env: &Env, var: &str) -> Option<String> {
    env.get(var)
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

pub fn required(env: &Env, var: &str) -> Result<String, ConfigError> {
    optional(env, var).ok_or_else(|| ConfigError::Missing {
        var: var.to_owned(),
    })
}

/// Settings every service reads under the same names.
#[derive(Debug, Clone)]
pub struct SharedConfig {
    /// `NATS_URL`
    pub nats_url: String,
    /// `DATABASE_URL` (services that own tables)
    pub database_url: Option<String>,
    /// `REDIS_URL`
    pub redis_url: Option<String>,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`
    pub otlp_endpoint: Option<String>,
    /// `AGENTMESH_BUS_*`
    pub bus: BusConfig,
    /// `AGENTMESH_SERVICE_KEY` or `AGENTMESH_SERVICE_KEY_FILE`, and the
    /// token lifetimes (see [`mesh_auth::service`]). `None` when no key is
    /// set: a service that serves or calls internal gRPC then refuses to
    /// start ([`crate::service_auth::init`]); tools that only read the bus
    /// do not need it.
    pub service_auth: Option<mesh_auth::service::ServiceAuthConfig>,
    /// `AGENTMESH_TLS_*`: mutual TLS on internal gRPC, loaded from its files
    /// (see [`crate::tls`]); `None`, plain TCP, when no file is set.
    pub tls: Option<crate::tls::MeshTls>,
}

impl SharedConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let defaults = BusConfig::default();
        let retry_defaults = RetryPolicy::default();
        let bus = BusConfig {
            events_max_age: Duration::from_secs(parse_or(
                env,
                "AGENTMESH_BUS_EVENTS_MAX_AGE_SECS",
                defaults.events_max_age.as_secs(),
            )?),
            dlq_max_age: Duration::from_secs(parse_or(
                env,
                "AGENTMESH_BUS_DLQ_MAX_AGE_SECS",
                defaults.dlq_max_age.as_secs(),
            )?),
            duplicate_window: millis_or(
                env,
                "AGENTMESH_BUS_DUPLICATE_WINDOW_MS",
                defaults.duplicate_window,
            )?,
            max_message_bytes: parse_or(
                env,
                "AGENTMESH_BUS_MAX_MESSAGE_BYTES",
                defaults.max_message_bytes,
            )?,
            replicas: parse_or(env, "AGENTMESH_BUS_REPLICAS", defaults.replicas)?,
            task_retry: RetryPolicy {
                max_deliver: parse_or(
                    env,
                    "AGENTMESH_BUS_TASK_MAX_DELIVER",
                    retry_defaults.max_deliver,
                )?,
                base: millis_or(
                    env,
                    "AGENTMESH_BUS_TASK_BACKOFF_BASE_MS",
                    retry_defaults.base,
                )?,
                max: millis_or(env, "AGENTMESH_BUS_TASK_BACKOFF_MAX_MS", retry_defaults.max)?,
            },
            task_ack_wait: millis_or(
                env,
                "AGENTMESH_BUS_TASK_ACK_WAIT_MS",
                defaults.task_ack_wait,
            )?,
            task_max_ack_pending: parse_or(
                env,
                "AGENTMESH_BUS_TASK_MAX_ACK_PENDING",
                defaults.task_max_ack_pending,
            )?,
        };
        if bus.task_retry.max_deliver == 0 {
            return Err(ConfigError::Invalid {
                var: "AGENTMESH_BUS_TASK_MAX_DELIVER".to_owned(),
                reason: "must be at least 1".to_owned(),
            });
        }
        Ok(Self {
            nats_url: string_or(env, "NATS_URL", "nats://127.0.0.1:4222"),
            database_url: optional(env, "DATABASE_URL"),
            redis_url: optional(env, "REDIS_URL"),
            otlp_endpoint: optional(env, "OTEL_EXPORTER_OTLP_ENDPOINT"),
            bus,
            service_auth: mesh_auth::service::ServiceAuthConfig::from_env(env).map_err(|e| {
                ConfigError::Invalid {
                    var: e.var.to_owned(),
                    reason: e.reason,
                }
            })?,
            tls: crate::tls::MeshTls::from_env(env)?,
        })
    }
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
    fn defaults_apply_when_unset() {
        let c = SharedConfig::from_env(&Env::new()).unwrap();
        assert_eq!(c.nats_url, "nats://127.0.0.1:4222");
        assert_eq!(c.database_url, None);
        assert_eq!(c.bus.task_retry.max_deliver, 5);
    }

    #[test]
    fn values_are_read() {
        let c = SharedConfig::from_env(&env(&[
            ("NATS_URL", "nats://x:1"),
            ("AGENTMESH_BUS_TASK_MAX_DELIVER", "3"),
            ("AGENTMESH_BUS_TASK_ACK_WAIT_MS", "1500"),
        ]))
        .unwrap();
        assert_eq!(c.nats_url, "nats://x:1");
        assert_eq!(c.bus.task_retry.max_deliver, 3);
        assert_eq!(c.bus.task_ack_wait, Duration::from_millis(1500));
    }

    #[test]
    fn malformed_values_name_the_variable() {
        let err = SharedConfig::from_env(&env(&[("AGENTMESH_BUS_TASK_ACK_WAIT_MS", "soon")]))
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("AGENTMESH_BUS_TASK_ACK_WAIT_MS:"),
            "{err}"
        );
        let err =
            SharedConfig::from_env(&env(&[("AGENTMESH_BUS_TASK_MAX_DELIVER", "0")])).unwrap_err();
        assert!(
            err.to_string().contains("AGENTMESH_BUS_TASK_MAX_DELIVER"),
            "{err}"
        );
    }
}
