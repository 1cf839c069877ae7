//! `retrieval` tools: a search of one collection of the task's tenant
//! through the retrieval service's gRPC API. The model writes the query;
//! the collection, mode and topK come from the tool's config (the model may
//! ask for fewer or more hits, up to the configured topK).

use std::time::Duration;

use mesh_proto::retrieval_client::RetrievalClient;
use mesh_proto::{SearchMode, SearchRequest};
use mesh_spec::RetrievalConfig;
use serde_json::{Value, json};
use tonic::transport::Channel;

use super::ToolOutput;

/// What the model calls a retrieval tool with when its spec declares no
/// parameters.
pub const RETRIEVAL_PARAMETERS: &str = r#"{"type":"object","properties":{"query":{"type":"string","description":"What to look for, in words."},"topK":{"type":"integer","minimum":1,"description":"How many passages to return."}},"required":["query"],"additionalProperties":false}"#;

/// The default number of hits when the config sets no topK.
const DEFAULT_TOP_K: u32 = 5;

pub struct RetrievalTool {
    config: RetrievalConfig,
}

impl RetrievalTool {
    pub fn new(config: RetrievalConfig) -> Self {
        Self { config }
    }

    pub async fn call(
        &self,
        client: &RetrievalClient<Channel>,
        tenant: &str,
        arguments: &Value,
        timeout: Duration,
    ) -> ToolOutput {
        let Some(query) = arguments["query"].as_str().filter(|q| !q.trim().is_empty()) else {
            return ToolOutput::error("the search needs a non-empty \"query\"");
        };
        let limit = self.config.top_k.unwrap_or(DEFAULT_TOP_K).max(1);
        let top_k = arguments["topK"]
            .as_u64()
            .map_or(limit, |k| u32::try_from(k).unwrap_or(limit).clamp(1, limit));
        let mode = match self.config.mode.as_deref() {
            Some("vector") => SearchMode::Vector,
            Some("keyword") => SearchMode::Keyword,
            _ => SearchMode::Hybrid,
        };
        let request = SearchRequest {
            collection: self.config.collection.clone(),
            query: query.to_owned(),
            top_k,
            mode: mode as i32,
            ..Default::default()
        };
        let mut request = match mesh_runtime::grpc::outgoing(tenant, request) {
            Ok(request) => request,
            Err(status) => return ToolOutput::error(status.message().to_owned()),
        };
        request.set_timeout(timeout);
        match client.clone().search(request).await {
            Ok(response) => {
                let hits: Vec<Value> = response
                    .into_inner()
                    .hits
                    .into_iter()
                    .map(|hit| {
                        json!({
                            "documentId": hit.document_id,
                            "chunk": hit.chunk_index,
                            "score": hit.score,
                            "text": hit.text,
                            "metadata": hit.metadata,
                        })
                    })
                    .collect();
                ToolOutput::ok(json!({ "hits": hits }).to_string())
            }
            Err(status) => ToolOutput::error(format!(
                "the search of collection {:?} failed: {}",
                self.config.collection,
                status.message()
            )),
        }
    }
}
