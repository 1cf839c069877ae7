//! Per-tenant rate limits in Redis (DESIGN.md: "Redis holds ... rate-limit
//! buckets"), shared by every gateway replica. A fixed one-minute window
//! per tenant and bucket: `INCR` + `EXPIRE` in one atomic pipeline on
//! `agentmesh:<tenant>:ratelimit:<bucket>:<minute>`.
//!
//! When Redis does not answer, requests are let through (and counted in
//! `gateway_ratelimit_errors`): the limiter protects capacity, it must not
//! become the outage.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::ConnectionManager;

#[derive(Clone)]
pub struct RateLimiter {
    conn: ConnectionManager,
    per_minute: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    Limited { retry_after: Duration },
}

impl RateLimiter {
    pub async fn connect(
        url: &str,
        per_minute: u32,
        timeout: Duration,
    ) -> redis::RedisResult<Self> {
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1);
        let conn = redis::Client::open(url)?
            .get_connection_manager_with_config(config)
            .await?;
        Ok(Self { conn, per_minute })
    }

    /// Counts one request of `tenant` against `bucket`.
    pub async fn check(&self, tenant: &str, bucket: &str) -> redis::RedisResult<Decision> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let window = now / 60;
        let key = format!("agentmesh:{tenant}:ratelimit:{bucket}:{window}");
        let (count, _): (u64, i64) = redis::pipe()
            .atomic()
            .incr(&key, 1)
            .expire(&key, 120)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(decide(count, self.per_minute, now))
    }
}

fn decide(count: u64, per_minute: u32, now_secs: u64) -> Decision {
    if count <= u64::from(per_minute) {
        Decision::Allowed
    } else {
        Decision::Limited {
            retry_after: Duration::from_secs(60 - now_secs % 60),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_is_inclusive_and_retry_after_reaches_the_next_window() {
        assert_eq!(decide(3, 3, 120), Decision::Allowed);
        assert_eq!(
            decide(4, 3, 125),
            Decision::Limited {
                retry_after: Duration::from_secs(55)
            }
        );
        assert_eq!(
            decide(4, 3, 179),
            Decision::Limited {
                retry_after: Duration::from_secs(1)
            }
        );
    }
}
