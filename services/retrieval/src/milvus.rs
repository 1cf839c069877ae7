//! The Milvus backend: vector search for every collection goes to a Milvus
//! server (one Milvus collection per retrieval collection, HNSW with cosine
//! similarity, the chunk key as primary key and the document metadata as a
//! JSON field for filters), for users who outgrow one machine's memory.
//! The retrieval tables stay the source of truth: a collection's Milvus copy
//! is rebuilt from its rows whenever the service (re)loads the collection,
//! and kept in step with each write after that.
//!
//! The client is generated from `proto/milvus/milvus.proto`, the subset of
//! Milvus' published gRPC API this module calls, with the workspace's own
//! tonic (see the note of issue 5 for why not `milvus-sdk-rust`).

use mesh_proto::milvus as mv;
use mesh_proto::milvus::milvus_service_client::MilvusServiceClient;
use prost::Message as _;
use tonic::transport::Channel;

use crate::error::RetrievalError;
use crate::index::{Filter, HnswParams, NewChunk};

/// Rows per insert and keys per delete expression.
const BATCH: usize = 1000;

#[derive(Clone)]
pub struct Milvus {
    client: MilvusServiceClient<Channel>,
    params: HnswParams,
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> RetrievalError {
    RetrievalError::Unavailable(format!("milvus {what}: {e}"))
}

fn check(what: &str, status: Option<&mv::Status>) -> Result<(), RetrievalError> {
    match status {
        Some(s) if s.code != 0 || s.error_code != 0 => Err(unavailable(
            what,
            format!("code {} {}", s.code.max(s.error_code), s.reason),
        )),
        _ => Ok(()),
    }
}

/// The Milvus collection of a retrieval collection (row ids are unique
/// across tenants; Milvus names allow letters, digits and `_`).
pub fn collection_name(collection_id: i64) -> String {
    format!("agentmesh_{collection_id}")
}

/// A Milvus string literal.
fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The boolean expression of a metadata filter: every condition is an
/// OR of equalities on the JSON field (Milvus Lite refuses `in` on JSON
/// paths).
pub fn expression(filter: &Filter) -> String {
    filter
        .all
        .iter()
        .map(|(key, values)| {
            let any: Vec<String> = values
                .iter()
                .map(|v| format!("meta[{}] == {}", quote(key), quote(v)))
                .collect();
            format!("({})", any.join(" or "))
        })
        .collect::<Vec<_>>()
        .join(" and ")
}

fn kv(key: &str, value: impl Into<String>) -> mv::KeyValuePair {
    mv::KeyValuePair {
        key: key.to_owned(),
        value: value.into(),
    }
}

impl Milvus {
    pub fn new(url: &str, params: HnswParams) -> Result<Self, RetrievalError> {
        let channel = tonic::transport::Endpoint::from_shared(url.to_owned())
            .map_err(|e| RetrievalError::invalid("AGENTMESH_RETRIEVAL_MILVUS_URL", e))?
            .connect_timeout(std::time::Duration::from_secs(5))
            .tcp_nodelay(true)
            .connect_lazy();
        Ok(Self {
            client: MilvusServiceClient::new(channel)
                .max_decoding_message_size(64 << 20)
                .max_encoding_message_size(64 << 20),
            params,
        })
    }

    /// Drops and recreates the collection's Milvus copy, then loads it
    /// with `chunks` (the rows are the truth; whatever Milvus held is gone).
    pub async fn rebuild(
        &self,
        collection_id: i64,
        dimension: usize,
        chunks: &[(u64, &[f32], &std::collections::BTreeMap<String, String>)],
    ) -> Result<(), RetrievalError> {
        let name = collection_name(collection_id);
        let mut client = self.client.clone();
        let exists = client
            .has_collection(mv::HasCollectionRequest {
                db_name: String::new(),
                collection_name: name.clone(),
            })
            .await
            .map_err(|e| unavailable("has collection", e))?
            .into_inner();
        check("has collection", exists.status.as_ref())?;
        if exists.value {
            self.drop(collection_id).await?;
        }
        let field =
            |name: &str, data_type: mv::DataType, primary: bool, params: Vec<mv::KeyValuePair>| {
                mv::FieldSchema {
                    field_id: 0,
                    name: name.to_owned(),
                    is_primary_key: primary,
                    description: String::new(),
                    data_type: data_type.into(),
                    type_params: params,
                    index_params: Vec::new(),
                    auto_id: false,
                }
            };
        let schema = mv::CollectionSchema {
            name: name.clone(),
            description: "agentmesh retrieval chunks".to_owned(),
            fields: vec![
                field("id", mv::DataType::Int64, true, Vec::new()),
                field(
                    "vector",
                    mv::DataType::FloatVector,
                    false,
                    vec![kv("dim", dimension.to_string())],
                ),
                field("meta", mv::DataType::Json, false, Vec::new()),
            ],
            enable_dynamic_field: false,
        };
        let status = client
            .create_collection(mv::CreateCollectionRequest {
                db_name: String::new(),
                collection_name: name.clone(),
                schema: schema.encode_to_vec(),
                shards_num: 1,
            })
            .await
            .map_err(|e| unavailable("create collection", e))?
            .into_inner();
        check("create collection", Some(&status))?;
        let index_params = format!(
            "{{\"M\": {}, \"efConstruction\": {}}}",
            self.params.connectivity, self.params.ef_construction
        );
        let status = client
            .create_index(mv::CreateIndexRequest {
                db_name: String::new(),
                collection_name: name.clone(),
                field_name: "vector".to_owned(),
                extra_params: vec![
                    kv("index_type", "HNSW"),
                    kv("metric_type", "COSINE"),
                    kv("params", index_params),
                ],
                index_name: "vector".to_owned(),
            })
            .await
            .map_err(|e| unavailable("create index", e))?
            .into_inner();
        check("create index", Some(&status))?;
        let status = client
            .load_collection(mv::LoadCollectionRequest {
                db_name: String::new(),
                collection_name: name.clone(),
            })
            .await
            .map_err(|e| unavailable("load collection", e))?
            .into_inner();
        check("load collection", Some(&status))?;
        for batch in chunks.chunks(BATCH) {
            self.insert_rows(&name, dimension, batch).await?;
        }
        Ok(())
    }

    async fn insert_rows(
        &self,
        name: &str,
        dimension: usize,
        rows: &[(u64, &[f32], &std::collections::BTreeMap<String, String>)],
    ) -> Result<(), RetrievalError> {
        if rows.is_empty() {
            return Ok(());
        }
        let ids = rows.iter().map(|(k, _, _)| *k as i64).collect();
        let vectors = rows
            .iter()
            .flat_map(|(_, v, _)| v.iter().copied())
            .collect();
        let metas = rows
            .iter()
            .map(|(_, _, m)| serde_json::to_vec(m).unwrap_or_else(|_| b"{}".to_vec()))
            .collect();
        let scalar = |name: &str, data_type: mv::DataType, data| mv::FieldData {
            r#type: data_type.into(),
            field_name: name.to_owned(),
            field: Some(mv::field_data::Field::Scalars(mv::ScalarField {
                data: Some(data),
            })),
            field_id: 0,
        };
        let fields = vec![
            scalar(
                "id",
                mv::DataType::Int64,
                mv::scalar_field::Data::LongData(mv::LongArray { data: ids }),
            ),
            mv::FieldData {
                r#type: mv::DataType::FloatVector.into(),
                field_name: "vector".to_owned(),
                field: Some(mv::field_data::Field::Vectors(mv::VectorField {
                    dim: dimension as i64,
                    data: Some(mv::vector_field::Data::FloatVector(mv::FloatArray {
                        data: vectors,
                    })),
                })),
                field_id: 0,
            },
            scalar(
                "meta",
                mv::DataType::Json,
                mv::scalar_field::Data::JsonData(mv::JsonArray { data: metas }),
            ),
        ];
        let result = self
            .client
            .clone()
            .insert(mv::InsertRequest {
                db_name: String::new(),
                collection_name: name.to_owned(),
                partition_name: String::new(),
                fields_data: fields,
                hash_keys: Vec::new(),
                num_rows: rows.len() as u32,
            })
            .await
            .map_err(|e| unavailable("insert", e))?
            .into_inner();
        check("insert", result.status.as_ref())
    }

    /// Applies one committed write: removed keys, then added chunks.
    pub async fn apply(
        &self,
        collection_id: i64,
        dimension: usize,
        removed: &[u64],
        added: &[NewChunk],
    ) -> Result<(), RetrievalError> {
        let name = collection_name(collection_id);
        for batch in removed.chunks(BATCH) {
            let keys: Vec<String> = batch.iter().map(u64::to_string).collect();
            let result = self
                .client
                .clone()
                .delete(mv::DeleteRequest {
                    db_name: String::new(),
                    collection_name: name.clone(),
                    partition_name: String::new(),
                    expr: format!("id in [{}]", keys.join(", ")),
                })
                .await
                .map_err(|e| unavailable("delete", e))?
                .into_inner();
            check("delete", result.status.as_ref())?;
        }
        let rows: Vec<_> = added
            .iter()
            .map(|c| (c.key, c.vector.as_slice(), c.entry.metadata.as_ref()))
            .collect();
        for batch in rows.chunks(BATCH) {
            self.insert_rows(&name, dimension, batch).await?;
        }
        Ok(())
    }

    pub async fn drop(&self, collection_id: i64) -> Result<(), RetrievalError> {
        let status = self
            .client
            .clone()
            .drop_collection(mv::DropCollectionRequest {
                db_name: String::new(),
                collection_name: collection_name(collection_id),
            })
            .await
            .map_err(|e| unavailable("drop collection", e))?
            .into_inner();
        check("drop collection", Some(&status))
    }

    /// The `k` nearest chunks (cosine similarity), best first.
    pub async fn search(
        &self,
        collection_id: i64,
        vector: &[f32],
        k: usize,
        filter: &Filter,
        ef: usize,
    ) -> Result<Vec<(u64, f32)>, RetrievalError> {
        let placeholder = mv::PlaceholderGroup {
            placeholders: vec![mv::PlaceholderValue {
                tag: "$0".to_owned(),
                r#type: mv::PlaceholderType::PlaceholderFloatVector.into(),
                values: vec![vector.iter().flat_map(|x| x.to_le_bytes()).collect()],
            }],
        };
        let ef = if ef == 0 { self.params.ef_search } else { ef }.max(k);
        let response = self
            .client
            .clone()
            .search(mv::SearchRequest {
                db_name: String::new(),
                collection_name: collection_name(collection_id),
                partition_names: Vec::new(),
                dsl: expression(filter),
                placeholder_group: placeholder.encode_to_vec(),
                dsl_type: mv::DslType::BoolExprV1.into(),
                output_fields: Vec::new(),
                search_params: vec![
                    kv("anns_field", "vector"),
                    kv("topk", k.to_string()),
                    kv("metric_type", "COSINE"),
                    kv("params", format!("{{\"ef\": {ef}}}")),
                    kv("round_decimal", "-1"),
                ],
                nq: 1,
            })
            .await
            .map_err(|e| unavailable("search", e))?
            .into_inner();
        check("search", response.status.as_ref())?;
        let Some(results) = response.results else {
            return Ok(Vec::new());
        };
        let ids = match results.ids.and_then(|i| i.id_field) {
            Some(mv::ids::IdField::IntId(ids)) => ids.data,
            _ => Vec::new(),
        };
        Ok(ids
            .into_iter()
            .zip(results.scores)
            .map(|(id, score)| (id as u64, score))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_become_expressions_with_quoted_literals() {
        let filter = Filter {
            all: vec![
                ("team".to_owned(), vec!["a".to_owned(), "b\"c".to_owned()]),
                ("lang".to_owned(), vec!["en".to_owned()]),
            ],
        };
        assert_eq!(
            expression(&filter),
            r#"(meta["team"] == "a" or meta["team"] == "b\"c") and (meta["lang"] == "en")"#
        );
        assert_eq!(expression(&Filter::default()), "");
    }
}
