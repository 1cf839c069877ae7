//! Retrieval settings: `AGENTMESH_RETRIEVAL_*` plus the shared ones. Every
//! limit the service enforces is here, so an operator can change it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use mesh_runtime::SharedConfig;
use mesh_runtime::env::{self, ConfigError, Env};

#[derive(Debug, Clone)]
pub struct Config {
    pub shared: SharedConfig,
    /// `_MAX_HEADER_BYTES`, `_HEADER_TIMEOUT_MS`, `_BODY_TIMEOUT_MS` and the
    /// other limits of every listener (see [`mesh_runtime::ServerLimits`]).
    pub server: mesh_runtime::ServerLimits,
    /// Internal gRPC API and gRPC health (7004).
    pub grpc_listen: SocketAddr,
    /// `/healthz`, `/readyz`, `/metrics` (9104).
    pub admin_listen: SocketAddr,
    /// How often the consumer-lag gauge is refreshed.
    pub lag_interval: Duration,
    /// Where the SQLite file and the persisted indexes live.
    pub data_dir: PathBuf,
    pub db_max_connections: u32,
    /// Folder with all-MiniLM-L6-v2's `model.safetensors`, `tokenizer.json`
    /// and `config.json`; unset or absent: the local model is unavailable
    /// (collections must use `openai:<model>` or `none`).
    pub minilm_dir: Option<PathBuf>,
    /// OpenAI-compatible base URL (`.../v1` is appended) for `openai:<model>`.
    pub embeddings_url: Option<String>,
    pub embeddings_api_key: Option<String>,
    pub embeddings_timeout: Duration,
    /// Texts per embedding call (local batches and remote requests).
    pub embed_batch: usize,
    pub default_chunk_tokens: u32,
    pub default_overlap_tokens: u32,
    pub max_chunk_tokens: u32,
    /// Largest document text, in bytes (larger is INVALID_ARGUMENT).
    pub max_document_bytes: usize,
    pub max_documents_per_request: usize,
    /// Metadata entries of one document; also the most conditions one
    /// filter may have.
    pub max_metadata_entries: usize,
    /// Values one filter condition may list (`$in`).
    pub max_filter_values: usize,
    pub max_top_k: u32,
    pub max_query_bytes: usize,
    pub max_dimension: u32,
    /// Largest gRPC message accepted.
    pub max_message_bytes: usize,
    /// Collections with at most this many chunks are searched exactly;
    /// larger ones through HNSW.
    pub exact_max_chunks: usize,
    /// HNSW parameters (usearch): graph degree, build and search expansion.
    pub hnsw_connectivity: usize,
    pub hnsw_ef_construction: usize,
    pub hnsw_ef_search: usize,
    /// The scalar type the graph stores its vectors as (`f16` by default:
    /// the recall of `f32` at about half the memory and search time; see
    /// [`crate::index::Quantization`]). A graph saved with another one is
    /// rebuilt from the rows when its collection is loaded.
    pub hnsw_quantization: crate::index::Quantization,
    /// Memory budget of a collection's keyword-index (tantivy) writer, in
    /// bytes; at least 15 MB (tantivy's minimum). A writer exists only for
    /// collections written since they were loaded, and takes what it needs
    /// up to this before it flushes a segment.
    pub keyword_writer_memory_bytes: usize,
    /// Documents one tenant may store across all its collections; an upsert
    /// or ingest part that would go over is refused (RESOURCE_EXHAUSTED).
    pub max_documents_per_tenant: u64,
    /// Reciprocal rank fusion constant (score = sum of 1 / (k + rank)).
    pub rrf_k: f32,
    /// Documents per INGEST message (one job is split into parts).
    pub ingest_part_documents: usize,
    /// INGEST messages handled at once by this replica.
    pub ingest_concurrency: usize,
    /// How long a search may reuse a collection's row instead of reading it
    /// again (0: always read). Writes always read it. Another replica's
    /// changes (a new generation, a deleted collection) reach this replica's
    /// searches within this time.
    pub collection_cache: Duration,
    /// Milvus gRPC address (`http://host:19530`): when set, vector search
    /// goes to Milvus instead of the in-process index.
    pub milvus_url: Option<String>,
}

const PREFIX: &str = "AGENTMESH_RETRIEVAL_";

fn var(name: &str) -> String {
    format!("{PREFIX}{name}")
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let config = Self {
            shared: SharedConfig::from_env(env)?,
            server: mesh_runtime::ServerLimits::from_env(env, PREFIX)?,
            grpc_listen: env::parse_or(env, &var("GRPC_LISTEN"), ([127, 0, 0, 1], 7004).into())?,
            admin_listen: env::parse_or(env, &var("ADMIN_LISTEN"), ([127, 0, 0, 1], 9104).into())?,
            lag_interval: env::millis_or(env, &var("LAG_INTERVAL_MS"), Duration::from_secs(5))?,
            data_dir: env::string_or(env, "AGENTMESH_DATA_DIR", ".data").into(),
            db_max_connections: env::parse_or(env, &var("DB_MAX_CONNECTIONS"), 16)?,
            minilm_dir: env::optional(env, &var("MINILM_DIR")).map(PathBuf::from),
            embeddings_url: env::optional(env, &var("EMBEDDINGS_URL")),
            embeddings_api_key: env::optional(env, &var("EMBEDDINGS_API_KEY")),
            embeddings_timeout: env::millis_or(
                env,
                &var("EMBEDDINGS_TIMEOUT_MS"),
                Duration::from_secs(30),
            )?,
            embed_batch: env::parse_or(env, &var("EMBED_BATCH"), 32)?,
            default_chunk_tokens: env::parse_or(env, &var("CHUNK_TOKENS"), 200)?,
            default_overlap_tokens: env::parse_or(env, &var("CHUNK_OVERLAP_TOKENS"), 40)?,
            max_chunk_tokens: env::parse_or(env, &var("MAX_CHUNK_TOKENS"), 256)?,
            max_document_bytes: env::parse_or(env, &var("MAX_DOCUMENT_BYTES"), 256 * 1024)?,
            max_documents_per_request: env::parse_or(env, &var("MAX_DOCUMENTS_PER_REQUEST"), 1000)?,
            max_metadata_entries: env::parse_or(env, &var("MAX_METADATA_ENTRIES"), 64)?,
            max_filter_values: env::parse_or(env, &var("MAX_FILTER_VALUES"), 256)?,
            max_top_k: env::parse_or(env, &var("MAX_TOP_K"), 1000)?,
            max_query_bytes: env::parse_or(env, &var("MAX_QUERY_BYTES"), 8 * 1024)?,
            max_dimension: env::parse_or(env, &var("MAX_DIMENSION"), 4096)?,
            max_message_bytes: env::parse_or(env, &var("MAX_MESSAGE_BYTES"), 32 * 1024 * 1024)?,
            exact_max_chunks: env::parse_or(env, &var("EXACT_MAX_CHUNKS"), 20_000)?,
            hnsw_connectivity: env::parse_or(env, &var("HNSW_M"), 16)?,
            hnsw_ef_construction: env::parse_or(env, &var("HNSW_EF_CONSTRUCTION"), 128)?,
            hnsw_ef_search: env::parse_or(env, &var("HNSW_EF_SEARCH"), 64)?,
            hnsw_quantization: env::parse_or(
                env,
                &var("HNSW_QUANTIZATION"),
                crate::index::Quantization::F16,
            )?,
            rrf_k: env::parse_or(env, &var("RRF_K"), 60.0)?,
            keyword_writer_memory_bytes: env::parse_or(
                env,
                &var("KEYWORD_WRITER_MEMORY_BYTES"),
                crate::keyword::MIN_WRITER_MEMORY_BYTES,
            )?,
            max_documents_per_tenant: env::parse_or(
                env,
                &var("MAX_DOCUMENTS_PER_TENANT"),
                1_000_000,
            )?,
            ingest_part_documents: env::parse_or(env, &var("INGEST_PART_DOCUMENTS"), 32)?,
            ingest_concurrency: env::parse_or(env, &var("INGEST_CONCURRENCY"), 2)?,
            collection_cache: env::millis_or(
                env,
                &var("COLLECTION_CACHE_MS"),
                Duration::from_millis(1000),
            )?,
            milvus_url: env::optional(env, &var("MILVUS_URL")),
        };
        if config.default_overlap_tokens >= config.default_chunk_tokens {
            return Err(ConfigError::Invalid {
                var: var("CHUNK_OVERLAP_TOKENS"),
                reason: "must be smaller than AGENTMESH_RETRIEVAL_CHUNK_TOKENS".to_owned(),
            });
        }
        // usearch replaces a degree below 2 with its own default, so the
        // graph would not be what the setting says.
        if config.hnsw_connectivity < 2 {
            return Err(ConfigError::Invalid {
                var: var("HNSW_M"),
                reason: "must be at least 2".to_owned(),
            });
        }
        if config.keyword_writer_memory_bytes < crate::keyword::MIN_WRITER_MEMORY_BYTES {
            return Err(ConfigError::Invalid {
                var: var("KEYWORD_WRITER_MEMORY_BYTES"),
                reason: format!(
                    "must be at least {} (tantivy's minimum)",
                    crate::keyword::MIN_WRITER_MEMORY_BYTES
                ),
            });
        }
        if config.default_chunk_tokens > config.max_chunk_tokens {
            return Err(ConfigError::Invalid {
                var: var("CHUNK_TOKENS"),
                reason: "must not exceed AGENTMESH_RETRIEVAL_MAX_CHUNK_TOKENS".to_owned(),
            });
        }
        Ok(config)
    }

    /// Defaults with every listener on a free port (tests, `agentmesh up`).
    pub fn ephemeral(shared: SharedConfig, data_dir: PathBuf) -> Result<Self, ConfigError> {
        let mut config = Self::from_env(&Env::new())?;
        config.shared = shared;
        config.data_dir = data_dir;
        config.grpc_listen = mesh_runtime::env::EPHEMERAL;
        config.admin_listen = mesh_runtime::env::EPHEMERAL;
        Ok(config)
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
    fn defaults_and_overrides() {
        let c = Config::from_env(&Env::new()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.grpc_listen.port(), 7004);
        assert_eq!(c.admin_listen.port(), 9104);
        assert!(c.minilm_dir.is_none());
        let c = Config::from_env(&env(&[
            ("AGENTMESH_RETRIEVAL_MAX_TOP_K", "5"),
            ("AGENTMESH_RETRIEVAL_MINILM_DIR", "/m"),
        ]))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.max_top_k, 5);
        assert_eq!(c.minilm_dir, Some(PathBuf::from("/m")));
    }

    #[test]
    fn bad_values_name_the_variable() {
        let err = Config::from_env(&env(&[("AGENTMESH_RETRIEVAL_MAX_TOP_K", "many")]))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("AGENTMESH_RETRIEVAL_MAX_TOP_K"), "{err}");
        let err = Config::from_env(&env(&[("AGENTMESH_RETRIEVAL_CHUNK_OVERLAP_TOKENS", "500")]))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("CHUNK_OVERLAP_TOKENS"), "{err}");
        let err = Config::from_env(&env(&[("AGENTMESH_RETRIEVAL_HNSW_QUANTIZATION", "i8")]))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("AGENTMESH_RETRIEVAL_HNSW_QUANTIZATION"),
            "{err}"
        );
        let err = Config::from_env(&env(&[("AGENTMESH_RETRIEVAL_HNSW_M", "1")]))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("AGENTMESH_RETRIEVAL_HNSW_M"), "{err}");
    }
}
