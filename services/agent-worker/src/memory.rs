//! Short-term memory: the turns of a session, per (tenant, agent, session),
//! in a Redis list with the agent's TTL and max history. A task reads the
//! session's earlier turns before its first model call and appends its own
//! (the input and the final answer) when it completes.
//!
//! The append is once per task: a Lua script sets a per-task marker and
//! appends only if the marker was new, so a task redelivered after it
//! appended (but before its terminal event was stored) does not write its
//! turn twice.

use std::time::Duration;

use mesh_proto::{AgentMemory, ChatMessage};
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;

/// One remembered message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Turn {
    role: String,
    content: String,
}

/// Connects on first use: workers whose agents keep no memory never need
/// Redis.
pub struct Memory {
    url: Option<String>,
    timeout: Duration,
    conn: OnceCell<ConnectionManager>,
}

#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("the agent keeps session memory but this worker has no REDIS_URL")]
    NotConfigured,
    #[error("session memory (redis): {0}")]
    Redis(#[from] redis::RedisError),
}

const APPEND: &str = r"
if redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[2]) then
  redis.call('RPUSH', KEYS[1], ARGV[3], ARGV[4])
  redis.call('LTRIM', KEYS[1], -tonumber(ARGV[1]), -1)
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
";

/// The session's key; every part is a validated name (no `:` inside).
fn session_key(tenant: &str, agent: &str, session: &str) -> String {
    format!("agentmesh:{tenant}:memory:{agent}:{session}")
}

impl Memory {
    pub fn new(url: Option<String>, timeout: Duration) -> Self {
        Self {
            url,
            timeout,
            conn: OnceCell::new(),
        }
    }

    async fn conn(&self) -> Result<ConnectionManager, MemoryError> {
        let url = self.url.as_deref().ok_or(MemoryError::NotConfigured)?;
        let conn = self
            .conn
            .get_or_try_init(|| async {
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.timeout))
                    .set_response_timeout(Some(self.timeout))
                    .set_number_of_retries(1);
                redis::Client::open(url)?
                    .get_connection_manager_with_config(config)
                    .await
            })
            .await?;
        Ok(conn.clone())
    }

    /// The session's remembered messages, oldest first.
    pub async fn history(
        &self,
        spec: &AgentMemory,
        tenant: &str,
        agent: &str,
        session: &str,
    ) -> Result<Vec<ChatMessage>, MemoryError> {
        let mut conn = self.conn().await?;
        let max = i64::from(spec.max_history.max(1));
        let raw: Vec<String> = redis::cmd("LRANGE")
            .arg(session_key(tenant, agent, session))
            .arg(-max)
            .arg(-1)
            .query_async(&mut conn)
            .await?;
        Ok(raw
            .iter()
            .filter_map(|item| serde_json::from_str::<Turn>(item).ok())
            .map(|turn| ChatMessage {
                role: turn.role,
                content: turn.content,
                ..Default::default()
            })
            .collect())
    }

    /// Appends the task's turn, once per task.
    #[allow(clippy::too_many_arguments)]
    pub async fn append(
        &self,
        spec: &AgentMemory,
        tenant: &str,
        agent: &str,
        session: &str,
        task_id: &str,
        input: &str,
        answer: &str,
    ) -> Result<bool, MemoryError> {
        let mut conn = self.conn().await?;
        let turn = |role: &str, content: &str| {
            serde_json::to_string(&Turn {
                role: role.to_owned(),
                content: content.to_owned(),
            })
            .unwrap_or_default()
        };
        // EVAL: the script is small and runs once per task.
        let appended: i64 = redis::cmd("EVAL")
            .arg(APPEND)
            .arg(2)
            .arg(session_key(tenant, agent, session))
            .arg(format!("agentmesh:{tenant}:memory-done:{task_id}"))
            .arg(spec.max_history.max(1))
            .arg(spec.ttl_seconds.max(1))
            .arg(turn("user", input))
            .arg(turn("assistant", answer))
            .query_async(&mut conn)
            .await?;
        Ok(appended == 1)
    }
}
