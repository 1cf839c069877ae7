#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

//! Retrieval through the gateway against real NATS JetStream and
//! PostgreSQL, with real all-MiniLM-L6-v2 embeddings: ingest then search
//! finds the right chunk by vector, keyword and hybrid search; delete by
//! filter; a restart loses nothing; tenants never see each other's
//! collections, documents or jobs; an ingest burst indexes every document
//! exactly once, even when a part is delivered twice; bad input is a 4xx
//! that names the field.

use std::time::Duration;

use mesh_auth::Role;
use mesh_integration::retrieval::minilm_available;
use mesh_integration::{Mesh, MeshOptions, RestClient, fresh_postgres};
use serde_json::{Value, json};

async fn mesh(tweak: Option<fn(&mut retrieval::Config)>) -> Mesh {
    Mesh::start(MeshOptions {
        database_url: Some(fresh_postgres().await.unwrap()),
        start_worker: false,
        retrieval: true,
        retrieval_config: tweak,
        ..Default::default()
    })
    .await
    .unwrap()
}

fn client(mesh: &Mesh, tenant: &str, role: Role) -> RestClient {
    RestClient::new(
        format!("http://{}", mesh.gateway.http_addr),
        mesh.token(tenant, &[role]),
    )
}

/// (status, body) of a JSON call.
async fn send(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

async fn ok(request: reqwest::RequestBuilder) -> Value {
    let (status, body) = send(request).await;
    assert!((200..300).contains(&status), "{status} {body}");
    body
}

async fn search(c: &RestClient, collection: &str, body: Value) -> Vec<Value> {
    let found = ok(c
        .post(&format!("/v1/collections/{collection}/search"))
        .json(&body))
    .await;
    found["hits"].as_array().unwrap().clone()
}

fn top_doc(hits: &[Value]) -> &str {
    hits.first()
        .and_then(|h| h["documentId"].as_str())
        .unwrap_or("<none>")
}

/// A long manual whose chunks are about different things: only one of them
/// mentions invoices.
fn manual() -> String {
    let filler = [
        "The cluster runs on three availability zones with automatic failover of the control plane.",
        "Logs are shipped to the central store and kept for thirty days before they are compacted.",
        "Deployments roll out one replica at a time and roll back when the health checks fail.",
    ];
    let mut text = String::new();
    for i in 0..6 {
        text.push_str(filler[i % 3]);
        text.push(' ');
    }
    text.push_str(
        "Refunds for a duplicated invoice are issued by the billing team within five business days. ",
    );
    for i in 0..6 {
        text.push_str(filler[(i + 1) % 3]);
        text.push(' ');
    }
    text
}

fn corpus() -> Value {
    json!({"documents": [
        {"id": "password", "text": "To reset your password, open the account settings page and choose 'forgot password'; a reset link is emailed to you.", "metadata": {"team": "identity", "lang": "en"}},
        {"id": "keda", "text": "KEDA scales the agent workers on the JetStream consumer lag of their durable consumer.", "metadata": {"team": "platform", "lang": "en"}},
        {"id": "pasta", "text": "Boil the spaghetti in salted water for nine minutes, then toss it with garlic and olive oil.", "metadata": {"team": "kitchen", "lang": "en"}},
        {"id": "billing-faq", "text": "Invoices are sent on the first day of each month; payment is due within thirty days.", "metadata": {"team": "billing", "lang": "en"}},
        {"id": "billing-de", "text": "Rechnungen werden am ersten Tag jedes Monats verschickt.", "metadata": {"team": "billing", "lang": "de"}},
        {"id": "manual", "text": manual(), "metadata": {"team": "platform", "lang": "en"}}
    ]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn search_finds_the_right_chunk_in_every_mode_and_survives_a_restart() {
    if !minilm_available("search_finds_the_right_chunk") {
        return;
    }
    let mut mesh = mesh(None).await;
    let acme = client(&mesh, "acme", Role::Operator);
    let created = ok(acme.post("/v1/collections").json(&json!({
        "name": "kb",
        "chunking": {"chunkTokens": 48, "overlapTokens": 8}
    })))
    .await;
    assert_eq!(created["embeddingModel"], "all-minilm-l6-v2");
    assert_eq!(created["dimension"], 384);
    let upserted = ok(acme.post("/v1/collections/kb/documents").json(&corpus())).await;
    assert_eq!(upserted["upserted"], 6);
    let chunks = upserted["chunks"].as_u64().unwrap();
    assert!(
        chunks > 6,
        "the manual is split into several chunks: {upserted}"
    );
    // The same content again changes nothing.
    let again = ok(acme.post("/v1/collections/kb/documents").json(&corpus())).await;
    assert_eq!(
        (again["upserted"].clone(), again["unchanged"].clone()),
        (json!(0), json!(6))
    );

    let vector = search(
        &acme,
        "kb",
        json!({"query": "I forgot my login credentials", "mode": "vector", "topK": 3}),
    )
    .await;
    assert_eq!(top_doc(&vector), "password", "{vector:?}");
    assert!(vector[0]["score"].as_f64().unwrap() > 0.3);
    assert_eq!(vector[0]["metadata"]["team"], "identity");

    let keyword = search(
        &acme,
        "kb",
        json!({"query": "jetstream consumer lag", "mode": "keyword", "topK": 3}),
    )
    .await;
    assert_eq!(top_doc(&keyword), "keda", "{keyword:?}");

    // The right chunk of a long document: the one about refunds.
    let hybrid = search(
        &acme,
        "kb",
        json!({"query": "refund for an invoice charged twice", "mode": "hybrid", "topK": 3}),
    )
    .await;
    let refund = hybrid
        .iter()
        .find(|h| h["documentId"] == "manual")
        .unwrap_or_else(|| panic!("the manual's refund chunk is among the hits: {hybrid:?}"));
    assert!(
        refund["text"].as_str().unwrap().contains("Refunds"),
        "{refund}"
    );
    assert!(refund["chunkIndex"].as_u64().unwrap() > 0);

    // A filter narrows every mode.
    let german = search(
        &acme,
        "kb",
        json!({"query": "invoices", "filter": {"lang": "de"}, "mode": "hybrid"}),
    )
    .await;
    assert_eq!(german.len(), 1, "{german:?}");
    assert_eq!(top_doc(&german), "billing-de");

    let doc = ok(acme.get("/v1/collections/kb/documents/pasta")).await;
    assert_eq!(doc["metadata"]["team"], "kitchen");
    assert!(doc["text"].as_str().unwrap().contains("spaghetti"));

    // Delete by filter: both billing documents go, nothing else.
    let deleted = ok(acme
        .post("/v1/collections/kb/documents/delete")
        .json(&json!({"filter": {"team": {"$in": ["billing"]}}})))
    .await;
    assert_eq!(deleted["deleted"], 2);
    let hits = search(
        &acme,
        "kb",
        json!({"query": "invoices monthly payment", "topK": 10}),
    )
    .await;
    assert!(
        hits.iter().all(|h| h["metadata"]["team"] != "billing"),
        "{hits:?}"
    );
    let (status, _) = send(acme.get("/v1/collections/kb/documents/billing-faq")).await;
    assert_eq!(status, 404);
    let (status, _) = send(acme.delete("/v1/collections/kb/documents/pasta")).await;
    assert_eq!(status, 200);

    // Restart: everything acknowledged is still there and searchable.
    let before = search(&acme, "kb", json!({"query": "reset password", "topK": 5})).await;
    mesh.stop_retrieval().await.unwrap();
    let (status, _) = send(acme.get("/v1/collections/kb")).await;
    assert_eq!(status, 503, "the gateway says the service is down");
    mesh.restart_retrieval().await.unwrap();
    let info = ok(acme.get("/v1/collections/kb")).await;
    assert_eq!(info["documentCount"], 3);
    let after = search(&acme, "kb", json!({"query": "reset password", "topK": 5})).await;
    let ids = |hits: &[Value]| -> Vec<String> {
        hits.iter()
            .map(|h| h["documentId"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids(&before), ids(&after));
    assert_eq!(top_doc(&after), "password");
    let keyword = search(
        &acme,
        "kb",
        json!({"query": "jetstream consumer lag", "mode": "keyword"}),
    )
    .await;
    assert_eq!(top_doc(&keyword), "keda");

    let deleted = ok(acme.delete("/v1/collections/kb")).await;
    assert_eq!(deleted["deleted"], true);
    let (status, _) = send(acme.get("/v1/collections/kb")).await;
    assert_eq!(status, 404);
}

fn vector_docs(prefix: &str, n: usize, team: &str) -> Value {
    let docs: Vec<Value> = (0..n)
        .map(|i| {
            let mut v = vec![0.0f32; 4];
            v[i % 4] = 1.0;
            v[(i + 1) % 4] = 0.5;
            json!({"id": format!("{prefix}{i}"), "text": format!("{prefix} note number {i}"), "metadata": {"team": team}, "vector": v})
        })
        .collect();
    json!({ "documents": docs })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tenants_never_see_or_touch_each_others_documents() {
    let mesh = mesh(None).await;
    let a = client(&mesh, "tenant-a", Role::Operator);
    let b = client(&mesh, "tenant-b", Role::Operator);
    let spec = json!({"name": "notes", "embeddingModel": "none", "dimension": 4});
    ok(a.post("/v1/collections").json(&spec)).await;
    ok(a.post("/v1/collections/notes/documents")
        .json(&vector_docs("secret", 8, "red")))
    .await;
    let job = ok(a
        .post("/v1/collections/notes/ingest")
        .json(&vector_docs("queued", 4, "red")))
    .await;
    let job_id = job["id"].as_str().unwrap().to_owned();

    // B sees nothing of A's by any call.
    let listed = ok(b.get("/v1/collections")).await;
    assert_eq!(listed["collections"], json!([]));
    for (status, _) in [
        send(b.get("/v1/collections/notes")).await,
        send(b.get("/v1/collections/notes/documents/secret0")).await,
        send(
            b.post("/v1/collections/notes/search")
                .json(&json!({"vector": [1, 0, 0, 0]})),
        )
        .await,
        send(b.delete("/v1/collections/notes/documents/secret0")).await,
        send(
            b.post("/v1/collections/notes/documents/delete")
                .json(&json!({"filter": {"team": "red"}})),
        )
        .await,
        send(
            b.post("/v1/collections/notes/documents")
                .json(&vector_docs("evil", 1, "red")),
        )
        .await,
        send(b.get(&format!("/v1/ingest-jobs/{job_id}"))).await,
        send(b.delete("/v1/collections/notes")).await,
    ] {
        assert_eq!(status, 404);
    }

    // B's collection of the same name is its own.
    ok(b.post("/v1/collections").json(&spec)).await;
    ok(b.post("/v1/collections/notes/documents")
        .json(&vector_docs("mine", 2, "red")))
    .await;
    let hits = search(&b, "notes", json!({"vector": [1, 0.5, 0, 0], "topK": 50})).await;
    assert_eq!(hits.len(), 2, "{hits:?}");
    assert!(
        hits.iter()
            .all(|h| h["documentId"].as_str().unwrap().starts_with("mine"))
    );
    let keyword = search(
        &b,
        "notes",
        json!({"query": "secret note", "mode": "keyword"}),
    )
    .await;
    assert!(
        keyword
            .iter()
            .all(|h| !h["documentId"].as_str().unwrap().starts_with("secret"))
    );
    let deleted = ok(b
        .post("/v1/collections/notes/documents/delete")
        .json(&json!({"filter": {"team": "red"}})))
    .await;
    assert_eq!(deleted["deleted"], 2);
    ok(b.delete("/v1/collections/notes")).await;

    // A still has everything (the queued job lands too).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let job = ok(a.get(&format!("/v1/ingest-jobs/{job_id}"))).await;
        if job["state"] == "succeeded" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "job never finished: {job}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let info = ok(a.get("/v1/collections/notes")).await;
    assert_eq!(info["documentCount"], 12, "{info}");
    let hits = search(&a, "notes", json!({"vector": [1, 0.5, 0, 0], "topK": 50})).await;
    assert_eq!(hits.len(), 12);
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// Files in the service's index folder whose names end with `suffix`.
fn index_files(mesh: &Mesh, suffix: &str) -> Vec<String> {
    std::fs::read_dir(mesh.data_dir.path().join("retrieval-index"))
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| name.ends_with(suffix))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_graph_is_mapped_and_the_keyword_index_catches_up_after_restarts() {
    // Past 20 chunks a collection is searched through the HNSW graph.
    let mut mesh = mesh(Some(|c: &mut retrieval::Config| c.exact_max_chunks = 20)).await;
    let a = client(&mesh, "acme", Role::Operator);
    ok(a.post("/v1/collections")
        .json(&json!({"name": "notes", "embeddingModel": "none", "dimension": 4})))
    .await;
    ok(a.post("/v1/collections/notes/documents")
        .json(&vector_docs("red", 30, "red")))
    .await;
    ok(a.post("/v1/collections/notes/documents")
        .json(&vector_docs("blue", 10, "blue")))
    .await;
    let first = search(&a, "notes", json!({"vector": [1, 0.5, 0, 0], "topK": 5})).await;
    assert_eq!(first.len(), 5);
    assert_eq!(index_files(&mesh, ".keyword").len(), 1);

    // Restart: the graph saved at shutdown is mapped, the keyword index
    // opened as committed.
    mesh.stop_retrieval().await.unwrap();
    assert_eq!(index_files(&mesh, ".usearch").len(), 1, "saved at shutdown");
    mesh.restart_retrieval().await.unwrap();
    let again = search(&a, "notes", json!({"vector": [1, 0.5, 0, 0], "topK": 5})).await;
    // Many documents share a vector: compare scores, not tied ids.
    let scores = |hits: &[Value]| -> Vec<String> {
        hits.iter()
            .map(|h| format!("{:.5}", h["score"].as_f64().unwrap()))
            .collect()
    };
    assert_eq!(scores(&first), scores(&again));
    let keyword = search(
        &a,
        "notes",
        json!({"query": "blue note number 7", "mode": "keyword", "topK": 3}),
    )
    .await;
    assert_eq!(top_doc(&keyword), "blue7", "{keyword:?}");

    // The first write after the restart (the mapped graph is read-only).
    let folder = mesh.data_dir.path().join("retrieval-index");
    let keyword_dir = folder.join(&index_files(&mesh, ".keyword")[0]);
    let saved = tempfile::tempdir().unwrap();
    copy_dir(&keyword_dir, saved.path());
    let zebra = json!({"documents": [{"id": "zebra", "text": "a zebra crossing", "metadata": {"team": "green"}, "vector": [0, 0, 0, 1]}]});
    ok(a.post("/v1/collections/notes/documents").json(&zebra)).await;
    let hits = search(&a, "notes", json!({"vector": [0, 0, 0, 1], "topK": 1})).await;
    assert_eq!(top_doc(&hits), "zebra", "{hits:?}");
    let hits = search(&a, "notes", json!({"query": "zebra", "mode": "keyword"})).await;
    assert_eq!(top_doc(&hits), "zebra", "{hits:?}");

    // Delete by filter reaches both indexes.
    let deleted = ok(a
        .post("/v1/collections/notes/documents/delete")
        .json(&json!({"filter": {"team": "blue"}})))
    .await;
    assert_eq!(deleted["deleted"], 10);
    let hits = search(
        &a,
        "notes",
        json!({"query": "blue note", "mode": "keyword", "topK": 50}),
    )
    .await;
    assert!(
        hits.iter().all(|h| h["metadata"]["team"] != "blue"),
        "{hits:?}"
    );
    let hits = search(&a, "notes", json!({"vector": [1, 0.5, 0, 0], "topK": 50})).await;
    assert_eq!(hits.len(), 31, "{hits:?}");

    // A crash between the database commit and the keyword commit: the
    // keyword folder as it was before the last writes. The restart finds
    // it behind the collection and rebuilds it from the rows.
    mesh.stop_retrieval().await.unwrap();
    std::fs::remove_dir_all(&keyword_dir).unwrap();
    copy_dir(saved.path(), &keyword_dir);
    mesh.restart_retrieval().await.unwrap();
    let hits = search(&a, "notes", json!({"query": "zebra", "mode": "keyword"})).await;
    assert_eq!(top_doc(&hits), "zebra", "{hits:?}");
    let hits = search(
        &a,
        "notes",
        json!({"query": "blue note", "mode": "keyword", "topK": 50}),
    )
    .await;
    assert!(
        hits.iter().all(|h| h["metadata"]["team"] != "blue"),
        "{hits:?}"
    );
    let hybrid = search(
        &a,
        "notes",
        json!({"query": "red note number 3", "mode": "keyword", "topK": 3, "filter": {"team": "red"}}),
    )
    .await;
    assert_eq!(top_doc(&hybrid), "red3", "{hybrid:?}");

    // Deleting the collection removes its files.
    ok(a.delete("/v1/collections/notes")).await;
    assert!(index_files(&mesh, ".keyword").is_empty());
    assert!(index_files(&mesh, ".usearch").is_empty());
}

/// Searches read a collection's last applied state and take no write
/// turn: a search is answered while a write to the same collection waits
/// inside its database transaction (on a row lock this test holds, so the
/// write is certainly under way), and sees the write once it returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_search_is_answered_while_a_write_to_its_collection_is_under_way() {
    use sea_orm::{ConnectionTrait as _, TransactionTrait as _};
    let url = fresh_postgres().await.unwrap();
    let mesh = Mesh::start(MeshOptions {
        database_url: Some(url.clone()),
        start_worker: false,
        retrieval: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let a = client(&mesh, "acme", Role::Operator);
    ok(a.post("/v1/collections")
        .json(&json!({"name": "notes", "embeddingModel": "none", "dimension": 4})))
    .await;
    let doc = |id: &str, vector: [f32; 4]| json!({"documents": [{"id": id, "text": format!("{id} note"), "vector": vector}]});
    ok(a.post("/v1/collections/notes/documents")
        .json(&doc("old", [1.0, 0.0, 0.0, 0.0])))
    .await;

    let db = sea_orm::Database::connect(&url).await.unwrap();
    let hold = db.begin().await.unwrap();
    hold.execute_unprepared("SELECT id FROM ret_collections WHERE name = 'notes' FOR UPDATE")
        .await
        .unwrap();
    let writer = {
        let request = a
            .post("/v1/collections/notes/documents")
            .json(&doc("new", [0.0, 1.0, 0.0, 0.0]));
        tokio::spawn(ok(request))
    };
    let waiting = "SELECT count(*) AS n FROM pg_stat_activity \
        WHERE datname = current_database() AND wait_event_type = 'Lock'";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let row = db
            .query_one_raw(sea_orm::Statement::from_string(
                sea_orm::DatabaseBackend::Postgres,
                waiting,
            ))
            .await
            .unwrap()
            .unwrap();
        if row.try_get::<i64>("", "n").unwrap() > 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the write never reached the held row"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let ids = |hits: Vec<Value>| -> Vec<String> {
        hits.iter()
            .map(|h| h["documentId"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    let during = tokio::time::timeout(Duration::from_secs(10), async {
        (
            search(&a, "notes", json!({"vector": [0, 1, 0, 0], "topK": 5})).await,
            search(&a, "notes", json!({"query": "note", "mode": "keyword"})).await,
        )
    })
    .await
    .expect("a search waited for the write");
    assert_eq!(ids(during.0), ["old"], "the state before the write");
    assert_eq!(ids(during.1), ["old"]);
    assert!(!writer.is_finished(), "the write is still held");

    hold.commit().await.unwrap();
    let written = writer.await.unwrap();
    assert_eq!(written["upserted"], 1, "{written}");
    let hits = search(&a, "notes", json!({"vector": [0, 1, 0, 0], "topK": 1})).await;
    assert_eq!(ids(hits), ["new"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_document_quota_is_per_tenant_and_an_ingest_job_over_it_fails_with_the_reason() {
    let mesh = mesh(Some(|c: &mut retrieval::Config| {
        c.max_documents_per_tenant = 10;
        c.ingest_part_documents = 4;
    }))
    .await;
    let a = client(&mesh, "acme", Role::Operator);
    let b = client(&mesh, "globex", Role::Operator);
    let spec = |name: &str| json!({"name": name, "embeddingModel": "none", "dimension": 4});
    ok(a.post("/v1/collections").json(&spec("notes"))).await;
    ok(a.post("/v1/collections").json(&spec("more"))).await;
    ok(b.post("/v1/collections").json(&spec("notes"))).await;
    ok(a.post("/v1/collections/notes/documents")
        .json(&vector_docs("n", 8, "red")))
    .await;

    // Three new documents would make 11: refused, naming the quota, and
    // nothing of the request is stored.
    let (status, body) = send(
        a.post("/v1/collections/notes/documents")
            .json(&vector_docs("m", 3, "red")),
    )
    .await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "resource_exhausted", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("AGENTMESH_RETRIEVAL_MAX_DOCUMENTS_PER_TENANT") && message.contains("10"),
        "{message}"
    );
    let info = ok(a.get("/v1/collections/notes")).await;
    assert_eq!(info["documentCount"], 8);

    // Replacing stored documents adds none: allowed at any count.
    let replaced = ok(a
        .post("/v1/collections/notes/documents")
        .json(&vector_docs("n", 8, "blue")))
    .await;
    assert_eq!(replaced["upserted"], 8);

    // The quota spans the tenant's collections.
    ok(a.post("/v1/collections/more/documents")
        .json(&vector_docs("x", 2, "red")))
    .await;
    let (status, body) = send(
        a.post("/v1/collections/more/documents")
            .json(&vector_docs("y", 1, "red")),
    )
    .await;
    assert_eq!(status, 429, "{body}");

    // Another tenant has its own.
    ok(b.post("/v1/collections/notes/documents")
        .json(&vector_docs("n", 10, "red")))
    .await;

    // Room for 5 again; an ingest job of 6 in parts of 4 and 2: the part
    // of 4 fits or not depending on order, but never both parts; the job
    // ends failed with the reason and its counts, nothing is lost silently.
    let deleted = ok(a
        .post("/v1/collections/notes/documents/delete")
        .json(&json!({"filter": {"team": "blue"}})))
    .await;
    assert_eq!(deleted["deleted"], 8);
    ok(a.post("/v1/collections/notes/documents")
        .json(&vector_docs("k", 3, "red")))
    .await;
    let (status, job) = send(
        a.post("/v1/collections/notes/ingest")
            .json(&vector_docs("job", 6, "red")),
    )
    .await;
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().unwrap().to_owned();
    let job = wait_job(
        &a,
        &id,
        tokio::time::Instant::now() + Duration::from_secs(30),
    )
    .await;
    assert_eq!(job["state"], "failed", "{job}");
    assert_eq!(job["doneDocuments"], 6, "{job}");
    let failed = job["failedDocuments"].as_u64().unwrap();
    assert!(failed == 4 || failed == 2, "{job}");
    assert!(
        job["error"]
            .as_str()
            .unwrap()
            .contains("AGENTMESH_RETRIEVAL_MAX_DOCUMENTS_PER_TENANT"),
        "{job}"
    );
    let stored = ok(a.get("/v1/collections/notes")).await["documentCount"]
        .as_u64()
        .unwrap()
        + ok(a.get("/v1/collections/more")).await["documentCount"]
            .as_u64()
            .unwrap();
    assert_eq!(stored, 5 + 6 - failed, "within the quota");
    assert!(stored <= 10);
}

async fn wait_job(c: &RestClient, id: &str, deadline: tokio::time::Instant) -> Value {
    loop {
        let job = ok(c.get(&format!("/v1/ingest-jobs/{id}"))).await;
        if job["state"] == "succeeded" || job["state"] == "failed" {
            return job;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "job never finished: {job}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_ingest_burst_indexes_every_document_exactly_once() {
    if !minilm_available("an_ingest_burst_indexes_every_document_exactly_once") {
        return;
    }
    const JOBS: usize = 4;
    const PER_JOB: usize = 30;
    let mesh = mesh(Some(|c: &mut retrieval::Config| {
        c.ingest_part_documents = 10;
    }))
    .await;
    let acme = client(&mesh, "acme", Role::Operator);
    ok(acme.post("/v1/collections").json(&json!({"name": "burst"}))).await;
    let started = std::time::Instant::now();
    let mut jobs = Vec::new();
    for j in 0..JOBS {
        let docs: Vec<Value> = (0..PER_JOB)
            .map(|i| json!({"id": format!("doc-{j}-{i}"), "text": format!("Ticket {j}-{i}: the customer reports that export number {i} of batch {j} failed."), "metadata": {"batch": j.to_string()}}))
            .collect();
        let (status, job) = send(
            acme.post("/v1/collections/burst/ingest")
                .json(&json!({ "documents": docs })),
        )
        .await;
        assert_eq!(status, 202, "{job}");
        assert_eq!(job["state"], "queued");
        jobs.push(job["id"].as_str().unwrap().to_owned());
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    for id in &jobs {
        let job = wait_job(&acme, id, deadline).await;
        assert_eq!(job["state"], "succeeded", "{job}");
        assert_eq!(job["doneDocuments"], PER_JOB);
        assert_eq!(job["failedDocuments"], 0);
    }
    let elapsed = started.elapsed();
    eprintln!(
        "ingest: {} documents in {elapsed:?} ({:.1} documents/s with local embeddings, debug build)",
        JOBS * PER_JOB,
        (JOBS * PER_JOB) as f64 / elapsed.as_secs_f64()
    );
    let info = ok(acme.get("/v1/collections/burst")).await;
    assert_eq!(info["documentCount"], JOBS * PER_JOB);
    assert_eq!(
        info["chunkCount"],
        JOBS * PER_JOB,
        "one chunk per short document"
    );

    // A part delivered again (a new message id defeats JetStream's
    // duplicate window, as a redelivery after a crash would) is recognised.
    let replay = mesh_proto::IngestBatch {
        job_id: jobs[0].clone(),
        collection: "burst".to_owned(),
        part: 0,
        documents: (0..10)
            .map(|i| mesh_proto::Document {
                id: format!("doc-0-{i}"),
                text: "changed text that must not be applied twice".to_owned(),
                ..Default::default()
            })
            .collect(),
    };
    mesh.bus
        .publish_acked("ingest.acme.burst".to_owned(), "acme", "replay-1", &replay)
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let lag = mesh
            .bus
            .consumer_lag(mesh_bus::StreamKind::Ingest, retrieval::CONSUMER)
            .await
            .unwrap();
        if lag.total() == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "replayed part never handled"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let job = ok(acme.get(&format!("/v1/ingest-jobs/{}", jobs[0]))).await;
    assert_eq!(
        job["doneDocuments"], PER_JOB,
        "progress counted once: {job}"
    );
    let doc = ok(acme.get("/v1/collections/burst/documents/doc-0-3")).await;
    assert!(
        doc["text"].as_str().unwrap().starts_with("Ticket 0-3"),
        "{doc}"
    );
    let info = ok(acme.get("/v1/collections/burst")).await;
    assert_eq!(info["chunkCount"], JOBS * PER_JOB);
    let hits = search(
        &acme,
        "burst",
        json!({"query": "export number 7 of batch 2", "topK": 1000, "mode": "keyword"}),
    )
    .await;
    let mut ids: Vec<&str> = hits
        .iter()
        .map(|h| h["documentId"].as_str().unwrap())
        .collect();
    let total = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), total, "no document is indexed twice");
    assert_eq!(top_doc(&hits), "doc-2-7");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_is_a_4xx_that_names_the_field() {
    let mesh = mesh(Some(|c: &mut retrieval::Config| {
        c.max_document_bytes = 2048;
        c.max_top_k = 50;
    }))
    .await;
    let acme = client(&mesh, "acme", Role::Operator);
    ok(acme
        .post("/v1/collections")
        .json(&json!({"name": "vecs", "embeddingModel": "none", "dimension": 4})))
    .await;
    ok(acme
        .post("/v1/collections/vecs/documents")
        .json(&vector_docs("v", 3, "red")))
    .await;

    let cases: Vec<(&str, reqwest::RequestBuilder, u16, &str)> = vec![
        ("wrong vector dimension", acme.post("/v1/collections/vecs/search").json(&json!({"vector": [1, 0, 0]})), 400, "vector"),
        ("wrong document vector dimension", acme.post("/v1/collections/vecs/documents").json(&json!({"documents": [{"id": "x", "text": "t", "vector": [1, 2]}]})), 400, "documents[0].vector"),
        ("empty query", acme.post("/v1/collections/vecs/search").json(&json!({"query": "  "})), 400, "query"),
        ("keyword without text", acme.post("/v1/collections/vecs/search").json(&json!({"vector": [1, 0, 0, 0], "mode": "keyword"})), 400, "query"),
        ("oversized document", acme.post("/v1/collections/vecs/documents").json(&json!({"documents": [{"id": "big", "text": "x".repeat(3000), "vector": [1, 0, 0, 0]}]})), 400, "documents[0].text"),
        ("bad filter value", acme.post("/v1/collections/vecs/search").json(&json!({"vector": [1, 0, 0, 0], "filter": {"team": 5}})), 400, "filter.team"),
        ("bad filter operator", acme.post("/v1/collections/vecs/documents/delete").json(&json!({"filter": {"team": {"$gt": "a"}}})), 400, "filter.team"),
        ("delete without ids or filter", acme.post("/v1/collections/vecs/documents/delete").json(&json!({})), 400, "filter"),
        ("topK over the limit", acme.post("/v1/collections/vecs/search").json(&json!({"vector": [1, 0, 0, 0], "topK": 51})), 400, "topK"),
        ("unknown mode", acme.post("/v1/collections/vecs/search").json(&json!({"query": "x", "mode": "fuzzy"})), 400, "mode"),
        ("bad collection name", acme.post("/v1/collections").json(&json!({"name": "Bad_Name"})), 400, "name"),
        ("unknown model", acme.post("/v1/collections").json(&json!({"name": "m", "embeddingModel": "word2vec"})), 400, "embeddingModel"),
        ("minilm with another dimension", acme.post("/v1/collections").json(&json!({"name": "m", "dimension": 768})), 400, "dimension"),
        ("overlap not below chunk size", acme.post("/v1/collections").json(&json!({"name": "m", "chunking": {"chunkTokens": 10, "overlapTokens": 10}})), 400, "chunking.overlapTokens"),
        ("duplicate ids", acme.post("/v1/collections/vecs/documents").json(&json!({"documents": [{"id": "a", "vector": [1, 0, 0, 0]}, {"id": "a", "vector": [1, 0, 0, 0]}]})), 400, "documents[1].id"),
        ("empty batch", acme.post("/v1/collections/vecs/ingest").json(&json!({"documents": []})), 400, "documents"),
        ("unknown field", acme.post("/v1/collections/vecs/search").json(&json!({"vector": [1, 0, 0, 0], "k": 3})), 400, ""),
        ("bad job id", acme.get("/v1/ingest-jobs/not-a-uuid"), 400, "id"),
    ];
    for (what, request, status, field) in cases {
        let (got, body) = send(request).await;
        assert_eq!(got, status, "{what}: {body}");
        if !field.is_empty() {
            assert_eq!(body["error"]["field"], field, "{what}: {body}");
            assert!(
                body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .starts_with(field),
                "{what}: {body}"
            );
        }
    }
    for (what, request) in [
        (
            "unknown collection",
            acme.post("/v1/collections/nope/search")
                .json(&json!({"vector": [1, 0, 0, 0]})),
        ),
        (
            "unknown document",
            acme.get("/v1/collections/vecs/documents/nope"),
        ),
        (
            "unknown job",
            acme.get(&format!("/v1/ingest-jobs/{}", uuid::Uuid::now_v7())),
        ),
    ] {
        let (got, body) = send(request).await;
        assert_eq!(got, 404, "{what}: {body}");
    }
    let (status, _) = send(
        acme.post("/v1/collections")
            .json(&json!({"name": "vecs", "embeddingModel": "none", "dimension": 4})),
    )
    .await;
    assert_eq!(status, 409, "a second collection of the same name");

    // Roles: a viewer may search but not write; a user may write documents
    // but not create collections.
    let viewer = client(&mesh, "acme", Role::Viewer);
    let (status, _) = send(
        viewer
            .post("/v1/collections/vecs/search")
            .json(&json!({"vector": [1, 0, 0, 0]})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = send(
        viewer
            .post("/v1/collections/vecs/documents")
            .json(&vector_docs("w", 1, "red")),
    )
    .await;
    assert_eq!(status, 403);
    let user = client(&mesh, "acme", Role::User);
    let (status, _) = send(
        user.post("/v1/collections/vecs/documents")
            .json(&vector_docs("w", 1, "red")),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = send(user.post("/v1/collections").json(&json!({"name": "other"}))).await;
    assert_eq!(status, 403);
    let (status, _) = send(reqwest::Client::new().get(acme.url("/v1/collections"))).await;
    assert_eq!(status, 401);
}

/// The OpenAI-compatible embedder against the real inference-router, which
/// routes `/v1/embeddings` to the simulator (deterministic vectors from a
/// hash of the text: the same text is the nearest neighbour of itself).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embeddings_through_the_inference_router() {
    let mesh = mesh(None).await;
    let acme = client(&mesh, "acme", Role::Operator);
    let created = ok(acme.post("/v1/collections").json(&json!({
        "name": "remote", "embeddingModel": "openai:sim-model", "dimension": 64
    })))
    .await;
    assert_eq!(created["dimension"], 64);
    let docs = json!({"documents": [
        {"id": "a", "text": "alpha centauri is the closest star system"},
        {"id": "b", "text": "bread needs flour, water, salt and yeast"},
        {"id": "c", "text": "the cat sleeps on the warm windowsill"}
    ]});
    let done = ok(acme.post("/v1/collections/remote/documents").json(&docs)).await;
    assert_eq!(done["upserted"], 3);
    let hits = search(
        &acme,
        "remote",
        json!({"query": "bread needs flour, water, salt and yeast", "mode": "vector", "topK": 3}),
    )
    .await;
    assert_eq!(top_doc(&hits), "b", "{hits:?}");
    assert!((hits[0]["score"].as_f64().unwrap() - 1.0).abs() < 1e-4);

    // A model whose vectors do not fit the collection is the caller's error.
    ok(acme.post("/v1/collections").json(&json!({
        "name": "narrow", "embeddingModel": "openai:sim-model", "dimension": 32
    })))
    .await;
    let (status, body) = send(
        acme.post("/v1/collections/narrow/documents")
            .json(&json!({"documents": [{"id": "x", "text": "some text"}]})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["field"], "embeddingModel");
}

fn with_token<T>(token: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

/// The gateway's public gRPC face: the token's tenant and role decide, the
/// same operations and errors as REST.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_public_grpc_face_uses_the_tokens_tenant() {
    use mesh_proto::retrieval_client::RetrievalClient;
    let mesh = mesh(None).await;
    let mut grpc = RetrievalClient::connect(mesh.gateway_grpc_url())
        .await
        .unwrap();
    let a = mesh.token("tenant-a", &[Role::Operator]);
    let b = mesh.token("tenant-b", &[Role::Operator]);
    let viewer = mesh.token("tenant-a", &[Role::Viewer]);
    grpc.create_collection(with_token(
        &a,
        mesh_proto::CreateCollectionRequest {
            name: "g".to_owned(),
            embedding_model: "none".to_owned(),
            dimension: 2,
            chunking: None,
        },
    ))
    .await
    .unwrap();
    let document = |id: &str, v: [f32; 2]| mesh_proto::Document {
        id: id.to_owned(),
        text: format!("document {id}"),
        vector: v.to_vec(),
        ..Default::default()
    };
    grpc.upsert_documents(with_token(
        &a,
        mesh_proto::UpsertDocumentsRequest {
            collection: "g".to_owned(),
            documents: vec![document("x", [1.0, 0.0]), document("y", [0.0, 1.0])],
        },
    ))
    .await
    .unwrap();
    let query = mesh_proto::SearchRequest {
        collection: "g".to_owned(),
        vector: vec![0.1, 0.9],
        top_k: 1,
        ..Default::default()
    };
    let hits = grpc
        .search(with_token(&viewer, query.clone()))
        .await
        .unwrap()
        .into_inner()
        .hits;
    assert_eq!(hits[0].document_id, "y");
    let other = grpc
        .search(with_token(&b, query.clone()))
        .await
        .unwrap_err();
    assert_eq!(other.code(), tonic::Code::NotFound);
    let denied = grpc
        .delete_collection(with_token(
            &viewer,
            mesh_proto::DeleteCollectionRequest {
                name: "g".to_owned(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    let bad = grpc
        .search(with_token(
            &a,
            mesh_proto::SearchRequest {
                vector: vec![1.0, 2.0, 3.0],
                ..query
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(bad.message().starts_with("vector:"), "{}", bad.message());
    let anonymous = grpc
        .list_collections(mesh_proto::ListCollectionsRequest {})
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), tonic::Code::Unauthenticated);
}
