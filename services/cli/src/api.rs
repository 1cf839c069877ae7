//! The gateway's REST API as the CLI uses it.

use std::io::Write as _;

use anyhow::{Context as _, bail};
use eventsource_stream::Eventsource as _;
use futures::StreamExt as _;
use serde_json::{Value, json};

use crate::output::Format;

#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    pub fn new(base: &str, token: String) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: base.trim_end_matches('/').to_owned(),
            token,
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let response = request
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("cannot reach the gateway at {}", self.base))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let message = body["error"]["message"].as_str().unwrap_or("no details");
            bail!("{status}: {message}");
        }
        Ok(body)
    }

    pub async fn apply_agent(&self, name: &str, spec: &Value) -> anyhow::Result<Value> {
        self.send(
            self.http
                .put(format!("{}/v1/agents/{name}", self.base))
                .json(spec),
        )
        .await
    }

    pub async fn apply_tool(&self, name: &str, spec: &Value) -> anyhow::Result<Value> {
        self.send(
            self.http
                .put(format!("{}/v1/tools/{name}", self.base))
                .json(spec),
        )
        .await
    }

    pub async fn submit(
        &self,
        agent: &str,
        input: &str,
        session: Option<&str>,
    ) -> anyhow::Result<Value> {
        let mut body = json!({ "input": input });
        if let Some(session) = session {
            body["sessionId"] = json!(session);
        }
        self.send(
            self.http
                .post(format!("{}/v1/agents/{agent}/tasks", self.base))
                .json(&body),
        )
        .await
    }

    /// Approves or rejects the tool call task `id` awaits.
    pub async fn decide(&self, id: &str, approve: bool, comment: &str) -> anyhow::Result<Value> {
        let verb = if approve { "approve" } else { "reject" };
        self.send(
            self.http
                .post(format!("{}/v1/tasks/{id}/{verb}", self.base))
                .json(&json!({ "comment": comment })),
        )
        .await
    }

    pub async fn task(&self, id: &str) -> anyhow::Result<Value> {
        self.send(self.http.get(format!("{}/v1/tasks/{id}", self.base)))
            .await
    }

    /// One trace as a tree (`GET /v1/traces/{trace_id}`).
    pub async fn trace(&self, id: &str) -> anyhow::Result<Value> {
        self.send(self.http.get(format!("{}/v1/traces/{id}", self.base)))
            .await
    }

    /// A page of traces (`GET /v1/traces`).
    pub async fn traces(&self, query: &[(&str, String)]) -> anyhow::Result<Value> {
        self.send(
            self.http
                .get(format!("{}/v1/traces", self.base))
                .query(query),
        )
        .await
    }

    /// A retrieval collection; `None` when the tenant has none of that name.
    pub async fn collection(&self, name: &str) -> anyhow::Result<Option<Value>> {
        let response = self
            .http
            .get(format!("{}/v1/collections/{name}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("cannot reach the gateway at {}", self.base))?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let message = body["error"]["message"].as_str().unwrap_or("no details");
            bail!("{status}: {message}");
        }
        Ok(Some(body))
    }

    /// Creates a collection with the retrieval service's defaults.
    pub async fn create_collection(&self, name: &str) -> anyhow::Result<Value> {
        self.send(
            self.http
                .post(format!("{}/v1/collections", self.base))
                .json(&json!({ "name": name })),
        )
        .await
    }

    /// Upserts documents (chunked and embedded before the answer).
    pub async fn upsert_documents(&self, collection: &str, body: &Value) -> anyhow::Result<Value> {
        self.send(
            self.http
                .post(format!(
                    "{}/v1/collections/{collection}/documents",
                    self.base
                ))
                .json(body),
        )
        .await
    }

    pub async fn tasks(&self, query: &[(&str, String)]) -> anyhow::Result<Value> {
        self.send(
            self.http
                .get(format!("{}/v1/tasks", self.base))
                .query(query),
        )
        .await
    }

    /// Follows the task's events, printing them as they arrive; returns the
    /// terminal event.
    pub async fn follow(&self, id: &str, format: Format) -> anyhow::Result<Value> {
        let response = self
            .http
            .get(format!("{}/v1/tasks/{id}/events", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("cannot reach the gateway at {}", self.base))?;
        if !response.status().is_success() {
            bail!("{}: cannot follow task {id}", response.status());
        }
        let mut events = response.bytes_stream().eventsource();
        let mut stdout = std::io::stdout();
        while let Some(event) = events.next().await {
            let event = event.context("event stream broke")?;
            let data: Value = serde_json::from_str(&event.data).unwrap_or(Value::Null);
            let terminal = matches!(event.event.as_str(), "completed" | "failed" | "cancelled");
            if format == Format::Json {
                // One event per line; the terminal one ends the follow.
                println!("{data}");
                if terminal {
                    return Ok(data);
                }
                continue;
            }
            match event.event.as_str() {
                "delta" => {
                    print!("{}", data["content"].as_str().unwrap_or_default());
                    let _ = stdout.flush();
                }
                "started" if data["attempt"].as_u64().unwrap_or(1) > 1 => {
                    eprintln!("\n[retry: attempt {}]", data["attempt"]);
                }
                "retrying" => eprintln!(
                    "\n[attempt {} failed: {}; retrying in {} ms]",
                    data["attempt"],
                    data["error"].as_str().unwrap_or_default(),
                    data["backoffMs"]
                ),
                _ => {}
            }
            if terminal {
                println!();
                return Ok(data);
            }
        }
        bail!("the event stream of task {id} ended before the task did")
    }
}
