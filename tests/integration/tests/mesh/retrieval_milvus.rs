#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

//! The retrieval service with its Milvus backend against Milvus Lite (the
//! real Milvus gRPC API) gives the same search behaviour as the in-process
//! index on the same documents: nearest neighbours, metadata filters,
//! deletes, hybrid search, and a restart (the Milvus copy is rebuilt from
//! the rows, which are the truth).

use mesh_integration::Nats;
use mesh_integration::milvus::{MilvusLite, milvus_available};
use mesh_proto as pb;
use mesh_proto::retrieval_client::RetrievalClient;
use mesh_runtime::grpc::outgoing;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

const DIM: usize = 16;

struct Service {
    client: RetrievalClient<Channel>,
    config: retrieval::Config,
    stop: CancellationToken,
    running: Option<retrieval::Running>,
}

async fn start(nats: &Nats, dir: &std::path::Path, milvus: Option<&str>) -> Service {
    let mut shared = mesh_integration::mesh::test_shared_config().unwrap();
    shared.nats_url = nats.url.clone();
    let mut config = retrieval::Config::ephemeral(shared, dir.to_owned()).unwrap();
    config.milvus_url = milvus.map(str::to_owned);
    let stop = CancellationToken::new();
    let running = retrieval::start(config.clone(), stop.clone())
        .await
        .unwrap();
    config.grpc_listen = running.grpc_addr;
    let client = RetrievalClient::connect(format!("http://{}", running.grpc_addr))
        .await
        .unwrap();
    Service {
        client,
        config,
        stop,
        running: Some(running),
    }
}

impl Service {
    async fn restart(&mut self) {
        self.stop.cancel();
        self.running.take().unwrap().stopped.wait().await.unwrap();
        self.stop = CancellationToken::new();
        self.running = Some(
            retrieval::start(self.config.clone(), self.stop.clone())
                .await
                .unwrap(),
        );
        self.client = RetrievalClient::connect(format!("http://{}", self.config.grpc_listen))
            .await
            .unwrap();
    }

    async fn search(&mut self, request: pb::SearchRequest) -> Vec<pb::SearchHit> {
        self.client
            .search(outgoing("acme", request).unwrap())
            .await
            .unwrap()
            .into_inner()
            .hits
    }
}

/// Deterministic pseudo-random unit vectors (SplitMix64).
fn vectors(n: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    (0..n)
        .map(|_| {
            let v: Vec<f32> = (0..DIM).map(|_| next()).collect();
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.into_iter().map(|x| x / norm).collect()
        })
        .collect()
}

fn ids(hits: &[pb::SearchHit]) -> Vec<String> {
    hits.iter().map(|h| h.document_id.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn milvus_backend_searches_like_the_in_process_index() {
    if !milvus_available("milvus_backend_searches_like_the_in_process_index") {
        return;
    }
    let milvus = MilvusLite::start().await.unwrap();
    let nats = Nats::start().unwrap();
    let (local_dir, milvus_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut local = start(&nats, local_dir.path(), None).await;
    let mut remote = start(&nats, milvus_dir.path(), Some(&milvus.url)).await;

    let documents: Vec<pb::Document> = vectors(300, 7)
        .into_iter()
        .enumerate()
        .map(|(i, vector)| pb::Document {
            id: format!("d{i}"),
            text: format!(
                "note {i} about {}",
                if i % 3 == 0 { "billing" } else { "deploys" }
            ),
            metadata: [(
                "team".to_owned(),
                ["red", "blue", "green"][i % 3].to_owned(),
            )]
            .into(),
            vector,
            ..Default::default()
        })
        .collect();
    for service in [&mut local, &mut remote] {
        service
            .client
            .create_collection(
                outgoing(
                    "acme",
                    pb::CreateCollectionRequest {
                        name: "notes".to_owned(),
                        embedding_model: "none".to_owned(),
                        dimension: DIM as u32,
                        chunking: None,
                    },
                )
                .unwrap(),
            )
            .await
            .unwrap();
        service
            .client
            .upsert_documents(
                outgoing(
                    "acme",
                    pb::UpsertDocumentsRequest {
                        collection: "notes".to_owned(),
                        documents: documents.clone(),
                    },
                )
                .unwrap(),
            )
            .await
            .unwrap();
    }

    let query = |vector: Vec<f32>, filter: Option<&str>| pb::SearchRequest {
        collection: "notes".to_owned(),
        vector,
        top_k: 10,
        mode: pb::SearchMode::Vector.into(),
        ef: 128,
        filter: filter.map(|team| pb::MetadataFilter {
            all: vec![pb::MetadataCondition {
                key: "team".to_owned(),
                any_of: vec![team.to_owned()],
            }],
        }),
        ..Default::default()
    };
    let mut agree = 0;
    let queries = vectors(20, 99);
    for q in &queries {
        let expected = ids(&local.search(query(q.clone(), None)).await);
        let got = remote.search(query(q.clone(), None)).await;
        assert_eq!(got.len(), 10);
        agree += ids(&got).iter().filter(|id| expected.contains(id)).count();
        // Scores are cosine similarities on both sides.
        let best = local.search(query(q.clone(), None)).await[0].score;
        assert!(
            (got[0].score - best).abs() < 1e-3,
            "{} vs {best}",
            got[0].score
        );
    }
    let recall = agree as f64 / (queries.len() * 10) as f64;
    assert!(
        recall >= 0.95,
        "milvus top-10 agrees with exact search on {recall:.3}"
    );

    // Filters reach Milvus as expressions on the metadata.
    let filtered = remote.search(query(queries[0].clone(), Some("red"))).await;
    assert_eq!(filtered.len(), 10);
    assert!(filtered.iter().all(|h| h.metadata["team"] == "red"));
    assert_eq!(
        ids(&filtered),
        ids(&local.search(query(queries[0].clone(), Some("red"))).await)
    );

    // Hybrid fuses Milvus' vector hits with local BM25.
    let hybrid = remote
        .search(pb::SearchRequest {
            collection: "notes".to_owned(),
            query: "billing".to_owned(),
            top_k: 5,
            mode: pb::SearchMode::Keyword.into(),
            ..Default::default()
        })
        .await;
    assert!(hybrid.iter().all(|h| h.text.contains("billing")));

    // Deletes reach Milvus.
    let deleted = remote
        .client
        .delete_documents(
            outgoing(
                "acme",
                pb::DeleteDocumentsRequest {
                    collection: "notes".to_owned(),
                    ids: Vec::new(),
                    filter: Some(pb::MetadataFilter {
                        all: vec![pb::MetadataCondition {
                            key: "team".to_owned(),
                            any_of: vec!["red".to_owned()],
                        }],
                    }),
                },
            )
            .unwrap(),
        )
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted.deleted, 100);
    let after = remote.search(query(queries[0].clone(), None)).await;
    assert_eq!(after.len(), 10);
    assert!(
        after.iter().all(|h| h.metadata["team"] != "red"),
        "{after:?}"
    );

    // A restart rebuilds the Milvus copy from the rows.
    remote.restart().await;
    let again = remote.search(query(queries[0].clone(), None)).await;
    assert_eq!(ids(&again), ids(&after));

    // The vectors really are searched in Milvus: without it, vector search
    // is unavailable (keyword search, all local, still answers).
    drop(milvus);
    let error = remote
        .client
        .search(outgoing("acme", query(queries[0].clone(), None)).unwrap())
        .await
        .unwrap_err();
    assert_eq!(error.code(), tonic::Code::Unavailable, "{error}");
    assert!(error.message().contains("milvus"), "{error}");
}
