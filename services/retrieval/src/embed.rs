//! Embeddings behind one trait: all-MiniLM-L6-v2 run in-process on CPU with
//! candle (the embedded default), or any OpenAI-compatible `/v1/embeddings`
//! endpoint (the inference-router, TEI, vLLM). Vectors come back L2-normalised
//! so cosine similarity is a dot product.
//!
//! The local model never downloads anything: it reads the files an operator
//! (or `scripts/ensure-minilm.sh`) put in a folder.

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config as BertConfig};
use tokenizers::{PaddingParams, Tokenizer, TruncationParams};

use crate::error::RetrievalError;

/// The name collections use for the local model.
pub const MINILM: &str = "all-minilm-l6-v2";
/// Its output dimension.
pub const MINILM_DIMENSION: u32 = 384;
/// Word pieces the model was trained on; longer inputs are truncated.
pub const MINILM_MAX_TOKENS: usize = 256;

#[async_trait::async_trait]
pub trait Embedder: Send + Sync {
    /// One normalised vector per text, in order.
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, RetrievalError>;
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

/// all-MiniLM-L6-v2 on CPU.
pub struct MiniLm {
    model: BertModel,
    tokenizer: Tokenizer,
    batch: usize,
}

impl MiniLm {
    /// Loads `model.safetensors`, `tokenizer.json` and `config.json` from `dir`.
    pub fn load(dir: &Path, batch: usize) -> Result<Self, LoadError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path).map_err(|source| LoadError::Read {
                path: path.display().to_string(),
                source,
            })
        };
        let invalid = |name: &str, message: String| LoadError::Invalid {
            path: dir.join(name).display().to_string(),
            message,
        };
        let config: BertConfig = serde_json::from_slice(&read("config.json")?)
            .map_err(|e| invalid("config.json", e.to_string()))?;
        let weights = read("model.safetensors")?;
        let vb = VarBuilder::from_buffered_safetensors(weights, DType::F32, &Device::Cpu)
            .map_err(|e| invalid("model.safetensors", e.to_string()))?;
        let model = BertModel::load(vb, &config)
            .map_err(|e| invalid("model.safetensors", e.to_string()))?;
        let tokenizer = load_tokenizer(dir)?;
        Ok(Self {
            model,
            tokenizer,
            batch: batch.max(1),
        })
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Embeds synchronously (CPU-bound: call from a blocking thread).
    pub fn embed_blocking(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, RetrievalError> {
        let mut out = Vec::with_capacity(texts.len());
        for batch in texts.chunks(self.batch) {
            out.extend(
                self.embed_batch(batch).map_err(|e| {
                    RetrievalError::Internal(format!("local embedding failed: {e}"))
                })?,
            );
        }
        Ok(out)
    }

    fn embed_batch(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, String> {
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| e.to_string())?;
        let len = encodings.first().map_or(0, |e| e.get_ids().len());
        let mut ids = Vec::with_capacity(texts.len() * len);
        let mut mask = Vec::with_capacity(texts.len() * len);
        for encoding in &encodings {
            ids.extend(encoding.get_ids().iter().map(|&i| i64::from(i)));
            mask.extend(encoding.get_attention_mask().iter().map(|&m| i64::from(m)));
        }
        let device = Device::Cpu;
        let shape = (texts.len(), len);
        let ids = Tensor::from_vec(ids, shape, &device).map_err(|e| e.to_string())?;
        let mask = Tensor::from_vec(mask, shape, &device).map_err(|e| e.to_string())?;
        let types = ids.zeros_like().map_err(|e| e.to_string())?;
        let hidden = self
            .model
            .forward(&ids, &types, Some(&mask))
            .map_err(|e| e.to_string())?;
        // Mean pooling over the real tokens, then L2 normalisation (what
        // sentence-transformers' pooling config for this model says).
        let pooled = (|| {
            let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
            let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
            let counts = mask.sum(1)?.clamp(1e-9, f32::MAX)?;
            let mean = summed.broadcast_div(&counts)?;
            let norm = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f32::MAX)?;
            mean.broadcast_div(&norm)?.to_vec2::<f32>()
        })()
        .map_err(|e: candle_core::Error| e.to_string())?;
        Ok(pooled)
    }
}

/// The model's tokenizer with batch padding and truncation at the model's
/// length (also used by the chunker to count tokens).
pub fn load_tokenizer(dir: &Path) -> Result<Tokenizer, LoadError> {
    let path = dir.join("tokenizer.json");
    let mut tokenizer = Tokenizer::from_file(&path).map_err(|e| LoadError::Invalid {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    tokenizer.with_padding(Some(PaddingParams::default()));
    tokenizer
        .with_truncation(Some(TruncationParams {
            max_length: MINILM_MAX_TOKENS,
            ..Default::default()
        }))
        .map_err(|e| LoadError::Invalid {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
    Ok(tokenizer)
}

/// The local model behind the async trait: inference runs on the blocking
/// pool, so it never stalls the runtime's workers.
#[derive(Clone)]
pub struct LocalEmbedder(pub Arc<MiniLm>);

#[async_trait::async_trait]
impl Embedder for LocalEmbedder {
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, RetrievalError> {
        let model = self.0.clone();
        let texts = texts.to_vec();
        tokio::task::spawn_blocking(move || model.embed_blocking(&texts))
            .await
            .map_err(|e| RetrievalError::Internal(format!("embedding task failed: {e}")))?
    }
}

/// An OpenAI-compatible `/v1/embeddings` endpoint.
#[derive(Clone)]
pub struct RemoteEmbedder {
    pub http: reqwest::Client,
    /// Base URL without `/v1`.
    pub base_url: String,
    pub api_key: Option<String>,
    pub model: String,
    pub batch: usize,
    pub timeout: std::time::Duration,
    /// Tenant on whose behalf the router is called (its limits and usage).
    pub tenant: String,
}

#[derive(serde::Deserialize)]
struct EmbeddingsResponse {
    data: Vec<EmbeddingItem>,
}

#[derive(serde::Deserialize)]
struct EmbeddingItem {
    index: usize,
    embedding: Vec<f32>,
}

#[async_trait::async_trait]
impl Embedder for RemoteEmbedder {
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, RetrievalError> {
        let mut out = Vec::with_capacity(texts.len());
        let url = format!("{}/v1/embeddings", self.base_url.trim_end_matches('/'));
        for batch in texts.chunks(self.batch.max(1)) {
            let mut request = self
                .http
                .post(&url)
                .timeout(self.timeout)
                .header(mesh_runtime::grpc::TENANT_METADATA, &self.tenant)
                .json(&serde_json::json!({"model": self.model, "input": batch}));
            match &self.api_key {
                Some(key) => request = request.bearer_auth(key),
                // No API key: the endpoint is the mesh's inference-router,
                // which honours the tenant header only with a service
                // token. The token never goes to a provider that wants a
                // key of its own.
                None => {
                    if let Ok(token) = mesh_runtime::service_auth::token() {
                        request = request.header(mesh_runtime::service_auth::TOKEN_HEADER, token);
                    }
                }
            }
            let response = request.send().await.map_err(|e| {
                RetrievalError::Unavailable(format!("embeddings endpoint unreachable: {e}"))
            })?;
            let status = response.status();
            if !status.is_success() {
                let body = response.text().await.unwrap_or_default();
                let message = format!("embeddings endpoint answered {status}: {body}");
                return Err(if status.is_client_error() {
                    RetrievalError::invalid("embedding_model", message)
                } else {
                    RetrievalError::Unavailable(message)
                });
            }
            let mut parsed: EmbeddingsResponse = response.json().await.map_err(|e| {
                RetrievalError::Unavailable(format!("embeddings endpoint: bad response: {e}"))
            })?;
            if parsed.data.len() != batch.len() {
                return Err(RetrievalError::Unavailable(format!(
                    "embeddings endpoint returned {} vectors for {} inputs",
                    parsed.data.len(),
                    batch.len()
                )));
            }
            parsed.data.sort_by_key(|item| item.index);
            out.extend(
                parsed
                    .data
                    .into_iter()
                    .map(|item| normalize(item.embedding)),
            );
        }
        Ok(out)
    }
}

/// L2-normalises `v` (a zero vector stays zero).
pub fn normalize(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_gives_unit_length() {
        let v = normalize(vec![3.0, 4.0]);
        assert!((v[0] - 0.6).abs() < 1e-6 && (v[1] - 0.8).abs() < 1e-6);
        assert_eq!(normalize(vec![0.0, 0.0]), vec![0.0, 0.0]);
    }
}
