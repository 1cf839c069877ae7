//! The one Redis connection the router's tenant limits and response cache
//! share. It connects on first use, so a Redis that is down at start makes
//! those features fail open instead of stopping the router. It holds no
//! policy: callers decide what a failure means.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;
use tokio::sync::OnceCell;

pub struct RedisLink {
    client: redis::Client,
    conn: OnceCell<ConnectionManager>,
    timeout: Duration,
}

impl RedisLink {
    /// A link to `url`; `None` (logged once, here) when `REDIS_URL` is unset
    /// or unusable, which turns limits and the cache off.
    pub fn open(url: Option<&str>, timeout: Duration) -> Option<Arc<Self>> {
        match url.map(redis::Client::open) {
            None => {
                tracing::info!("REDIS_URL is unset: tenant limits and the response cache are off");
                None
            }
            Some(Err(error)) => {
                tracing::warn!(%error, "REDIS_URL is not usable: tenant limits and the response cache are off");
                None
            }
            Some(Ok(client)) => Some(Arc::new(Self {
                client,
                conn: OnceCell::new(),
                timeout,
            })),
        }
    }

    /// The shared connection; each call after a failed connect tries again.
    pub async fn conn(&self) -> redis::RedisResult<ConnectionManager> {
        let conn = self
            .conn
            .get_or_try_init(|| async {
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.timeout))
                    .set_response_timeout(Some(self.timeout))
                    .set_number_of_retries(1);
                self.client.get_connection_manager_with_config(config).await
            })
            .await?;
        Ok(conn.clone())
    }
}
