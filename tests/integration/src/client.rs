//! A small REST client for the gateway, as a user's script would use it.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use eventsource_stream::Eventsource as _;
use futures::StreamExt as _;
use serde_json::{Value, json};

#[derive(Clone)]
pub struct RestClient {
    pub http: reqwest::Client,
    pub base: String,
    pub token: String,
}

/// One SSE event as received.
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub id: String,
    pub event: String,
    pub data: Value,
}

impl RestClient {
    pub fn new(base: String, token: String) -> Self {
        Self {
            http: reqwest::Client::new(),
            base,
            token,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.get(self.url(path)).bearer_auth(&self.token)
    }

    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.post(self.url(path)).bearer_auth(&self.token)
    }

    pub fn put(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.put(self.url(path)).bearer_auth(&self.token)
    }

    pub fn delete(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.delete(self.url(path)).bearer_auth(&self.token)
    }

    pub async fn apply_agent(&self, name: &str, spec: Value) -> anyhow::Result<Value> {
        let response = self
            .put(&format!("/v1/agents/{name}"))
            .json(&spec)
            .send()
            .await?;
        let status = response.status();
        let body: Value = response.json().await?;
        if !status.is_success() {
            bail!("apply {name}: {status} {body}");
        }
        Ok(body)
    }

    /// A simulator-backed agent with a small answer.
    pub async fn apply_sim_agent(&self, name: &str, max_tokens: u32) -> anyhow::Result<Value> {
        self.apply_agent(
            name,
            json!({"model": "sim-model", "systemPrompt": "be brief", "temperature": 0, "maxTokens": max_tokens}),
        )
        .await
    }

    pub async fn submit(&self, agent: &str, input: &str) -> anyhow::Result<String> {
        let response = self
            .post(&format!("/v1/agents/{agent}/tasks"))
            .json(&json!({ "input": input }))
            .send()
            .await?;
        let status = response.status();
        let body: Value = response.json().await?;
        if status != reqwest::StatusCode::ACCEPTED {
            bail!("submit to {agent}: {status} {body}");
        }
        body["id"].as_str().map(str::to_owned).context("no task id")
    }

    /// Submits a task that continues `session`.
    pub async fn submit_in_session(
        &self,
        agent: &str,
        input: &str,
        session: &str,
    ) -> anyhow::Result<String> {
        let response = self
            .post(&format!("/v1/agents/{agent}/tasks"))
            .json(&json!({ "input": input, "sessionId": session }))
            .send()
            .await?;
        let status = response.status();
        let body: Value = response.json().await?;
        if status != reqwest::StatusCode::ACCEPTED {
            bail!("submit to {agent} in {session}: {status} {body}");
        }
        body["id"].as_str().map(str::to_owned).context("no task id")
    }

    pub async fn task(&self, id: &str) -> anyhow::Result<Value> {
        let response = self.get(&format!("/v1/tasks/{id}")).send().await?;
        let status = response.status();
        let body: Value = response.json().await?;
        if !status.is_success() {
            bail!("get task {id}: {status} {body}");
        }
        Ok(body)
    }

    /// Polls until the task's status is one of `statuses`. A 503 (an
    /// upstream restarting) is retried like a slow answer; any other error
    /// fails at once.
    pub async fn wait_for(
        &self,
        id: &str,
        statuses: &[&str],
        timeout: Duration,
    ) -> anyhow::Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let response = self.get(&format!("/v1/tasks/{id}")).send().await?;
            let status = response.status();
            let task: Value = response.json().await?;
            if status.is_success()
                && statuses.contains(&task["status"].as_str().unwrap_or_default())
            {
                return Ok(task);
            }
            if !status.is_success() && status != reqwest::StatusCode::SERVICE_UNAVAILABLE {
                bail!("get task {id}: {status} {task}");
            }
            if Instant::now() > deadline {
                bail!("task {id} not in {statuses:?} after {timeout:?}: {status} {task}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Reads the task's SSE stream until it ends (or `timeout`).
    pub async fn events(
        &self,
        id: &str,
        last_event_id: Option<u64>,
        timeout: Duration,
    ) -> anyhow::Result<Vec<SseEvent>> {
        let mut request = self.get(&format!("/v1/tasks/{id}/events"));
        if let Some(seq) = last_event_id {
            request = request.header("Last-Event-ID", seq.to_string());
        }
        let response = request.send().await?;
        if !response.status().is_success() {
            let status = response.status();
            bail!(
                "events of {id}: {status} {}",
                response.text().await.unwrap_or_default()
            );
        }
        let mut stream = response.bytes_stream().eventsource();
        let mut events = Vec::new();
        let read = async {
            while let Some(event) = stream.next().await {
                let event = event?;
                events.push(SseEvent {
                    id: event.id,
                    event: event.event,
                    data: serde_json::from_str(&event.data).unwrap_or(Value::Null),
                });
            }
            anyhow::Ok(())
        };
        tokio::time::timeout(timeout, read)
            .await
            .with_context(|| format!("event stream of {id} did not end within {timeout:?}"))??;
        Ok(events)
    }
}
