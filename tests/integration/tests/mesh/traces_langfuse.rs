#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

//! The trace-collector's Langfuse-grade features end to end against real
//! NATS JetStream and PostgreSQL: generation costs from the operator's
//! price table (rolled up, filtered on, reloaded when the file changes),
//! the Langfuse-compatible ingest endpoint with per-tenant key pairs, and
//! scores attached to traces and observations.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mesh_integration::{Nats, fresh_postgres};
use prost::Message as _;
use sea_orm::EntityTrait as _;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use trace_collector::opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use trace_collector::opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use trace_collector::opentelemetry_proto::tonic::resource::v1::Resource;
use trace_collector::opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

const PROTOBUF: &str = "application/x-protobuf";
const LANGFUSE: &str = "/api/public/otel/v1/traces";

struct Collector {
    _nats: Nats,
    database_url: String,
    running: trace_collector::Running,
    stop: CancellationToken,
    http: reqwest::Client,
    _data: tempfile::TempDir,
}

impl Collector {
    async fn start(tweak: impl FnOnce(&mut trace_collector::Config)) -> Self {
        let nats = Nats::start().unwrap();
        let database_url = fresh_postgres().await.unwrap();
        let mut shared = mesh_integration::mesh::test_shared_config().unwrap();
        shared.nats_url = nats.url.clone();
        shared.database_url = Some(database_url.clone());
        let data = tempfile::tempdir().unwrap();
        let mut config =
            trace_collector::Config::ephemeral(shared, data.path().to_owned()).unwrap();
        tweak(&mut config);
        let stop = CancellationToken::new();
        let running = trace_collector::start(config, stop.clone()).await.unwrap();
        Self {
            _nats: nats,
            database_url,
            running,
            stop,
            http: reqwest::Client::new(),
            _data: data,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.running.http_addr)
    }

    async fn export(&self, tenant: &str, request: &ExportTraceServiceRequest) {
        let response = self
            .http
            .post(self.url("/v1/traces"))
            .header("content-type", PROTOBUF)
            .header("agentmesh-tenant", tenant)
            .header(
                "agentmesh-service-token",
                mesh_integration::mesh::service_token(),
            )
            .body(request.encode_to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }

    async fn get(&self, tenant: &str, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(self.url(path))
            .header("agentmesh-tenant", tenant)
            .header(
                "agentmesh-service-token",
                mesh_integration::mesh::service_token(),
            )
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    async fn post_json(&self, tenant: Option<&str>, path: &str, body: &Value) -> (u16, Value) {
        let mut request = self.http.post(self.url(path)).json(body);
        if let Some(tenant) = tenant {
            request = request.header("agentmesh-tenant", tenant).header(
                "agentmesh-service-token",
                mesh_integration::mesh::service_token(),
            );
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Polls until the tenant's trace has `count` observations.
    async fn wait_trace(&self, tenant: &str, trace_id: &str, count: i64) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let (status, body) = self.get(tenant, &format!("/api/traces/{trace_id}")).await;
            if status == 200 && body["observation_count"] == count {
                return body;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "trace {trace_id} never reached {count} observations: {status} {body}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn random_bytes(n: usize) -> Vec<u8> {
    uuid::Uuid::new_v4().as_bytes()[..n].to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn now_nanos() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    )
    .unwrap()
}

fn text(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
        ..Default::default()
    }
}

fn int(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
        ..Default::default()
    }
}

/// An agent span with one `chat <model>` generation per `(model, input
/// tokens, output tokens)` under it.
struct Trace {
    trace_id: Vec<u8>,
    spans: Vec<Span>,
}

impl Trace {
    fn new(generations: &[(&str, i64, i64)]) -> Self {
        let trace_id = random_bytes(16);
        let start = now_nanos();
        let root_id = random_bytes(8);
        let mut spans = vec![Span {
            trace_id: trace_id.clone(),
            span_id: root_id.clone(),
            name: "invoke_agent support".to_owned(),
            start_time_unix_nano: start,
            end_time_unix_nano: start + 100_000_000,
            attributes: vec![
                text("gen_ai.operation.name", "invoke_agent"),
                text("gen_ai.agent.name", "support"),
            ],
            ..Default::default()
        }];
        for (i, (model, input, output)) in generations.iter().enumerate() {
            let offset = 10_000_000 * (i as u64 + 1);
            spans.push(Span {
                trace_id: trace_id.clone(),
                span_id: random_bytes(8),
                parent_span_id: root_id.clone(),
                name: format!("chat {model}"),
                start_time_unix_nano: start + offset,
                end_time_unix_nano: start + offset + 5_000_000,
                attributes: vec![
                    text("gen_ai.operation.name", "chat"),
                    text("gen_ai.request.model", model),
                    int("gen_ai.usage.input_tokens", *input),
                    int("gen_ai.usage.output_tokens", *output),
                ],
                ..Default::default()
            });
        }
        Self { trace_id, spans }
    }

    fn id(&self) -> String {
        hex(&self.trace_id)
    }

    fn span_id(&self, i: usize) -> String {
        hex(&self.spans[i].span_id)
    }

    fn request(&self) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![text("service.name", "agent-worker")],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: self.spans.clone(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    fn count(&self) -> i64 {
        i64::try_from(self.spans.len()).unwrap()
    }
}

fn close(a: &Value, b: f64) -> bool {
    a.as_f64().is_some_and(|a| (a - b).abs() < 1e-9)
}

async fn write_prices(path: &Path, yaml: &str) {
    tokio::fs::write(path, yaml).await.unwrap();
}

async fn list_ids(collector: &Collector, tenant: &str, query: &str) -> Vec<String> {
    let (status, body) = collector.get(tenant, &format!("/api/traces?{query}")).await;
    assert_eq!(status, 200, "{body}");
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["trace_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn generations_are_priced_rolled_up_filtered_and_the_table_reloads() {
    let prices_dir = tempfile::tempdir().unwrap();
    let prices = prices_dir.path().join("prices.yaml");
    write_prices(
        &prices,
        "models:\n  gpt-4o: {input: 2.5, output: 10}\n  claude: {input: 3, output: 15}\n",
    )
    .await;
    let path = prices.clone();
    let collector = Collector::start(move |c| {
        c.prices_file = Some(path);
        c.prices_reload_interval = Duration::from_millis(50);
    })
    .await;

    // gpt-4o exactly, claude-3-5-sonnet by prefix, an unpriced model.
    let first = Trace::new(&[
        ("gpt-4o", 1000, 500),
        ("claude-3-5-sonnet-20241022", 2000, 100),
        ("unknown-model", 1000, 1000),
    ]);
    collector.export("acme", &first.request()).await;
    let body = collector
        .wait_trace("acme", &first.id(), first.count())
        .await;
    assert!(close(&body["total_cost_usd"], 0.015), "{body}");
    let root = &body["observations"][0];
    assert!(close(&root["total_cost_usd"], 0.015), "{root}");
    assert!(root["cost_usd"].is_null(), "the agent span has no cost");
    let generations = root["children"].as_array().unwrap();
    let by_name = |name: &str| {
        generations
            .iter()
            .find(|g| g["name"] == name)
            .unwrap_or_else(|| panic!("{name} missing: {root}"))
    };
    let gpt = by_name("chat gpt-4o");
    assert!(close(&gpt["input_cost_usd"], 0.0025), "{gpt}");
    assert!(close(&gpt["output_cost_usd"], 0.005), "{gpt}");
    assert!(close(&gpt["cost_usd"], 0.0075), "{gpt}");
    assert!(close(
        &by_name("chat claude-3-5-sonnet-20241022")["cost_usd"],
        0.0075
    ));
    let unpriced = by_name("chat unknown-model");
    assert!(unpriced["cost_usd"].is_null(), "{unpriced}");
    assert!(close(&unpriced["total_cost_usd"], 0.0), "{unpriced}");

    let (_, list) = collector.get("acme", "/api/traces").await;
    assert!(close(&list["data"][0]["total_cost_usd"], 0.015), "{list}");
    assert_eq!(
        list_ids(&collector, "acme", "min_cost=0.01").await,
        [first.id()]
    );
    assert!(
        list_ids(&collector, "acme", "min_cost=0.02")
            .await
            .is_empty()
    );
    let (status, body) = collector.get("acme", "/api/traces?min_cost=cheap").await;
    assert_eq!(status, 400, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("min_cost"), "{message}");

    // The operator doubles gpt-4o's input price: new spans use it, stored
    // costs stay as they were.
    write_prices(
        &prices,
        "models:\n  gpt-4o: {input: 5.0, output: 10}\n  claude: {input: 3, output: 15}\n",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = Trace::new(&[("gpt-4o", 1000, 500)]);
    collector.export("acme", &second.request()).await;
    let body = collector
        .wait_trace("acme", &second.id(), second.count())
        .await;
    assert!(close(&body["total_cost_usd"], 0.01), "{body}");
    let (_, body) = collector
        .get("acme", &format!("/api/traces/{}", first.id()))
        .await;
    assert!(close(&body["total_cost_usd"], 0.015), "{body}");

    // A broken edit is refused and the last good table stays in force.
    write_prices(&prices, "models: [not, a, table\n").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let third = Trace::new(&[("gpt-4o", 1000, 500)]);
    collector.export("acme", &third.request()).await;
    let body = collector
        .wait_trace("acme", &third.id(), third.count())
        .await;
    assert!(close(&body["total_cost_usd"], 0.01), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_builtin_price_table_prices_known_models() {
    let collector = Collector::start(|_| {}).await;
    let trace = Trace::new(&[("gpt-4o-mini", 1_000_000, 0), ("smollm2", 500, 500)]);
    collector.export("acme", &trace.request()).await;
    let body = collector
        .wait_trace("acme", &trace.id(), trace.count())
        .await;
    assert!(close(&body["total_cost_usd"], 0.15), "{body}");
    let smol = body["observations"][0]["children"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "chat smollm2")
        .unwrap()
        .clone();
    assert!(close(&smol["cost_usd"], 0.0), "{smol}");
}

async fn langfuse_post(
    collector: &Collector,
    auth: Option<(&str, &str)>,
    tenant_header: Option<&str>,
    trace: &Trace,
) -> reqwest::Response {
    let mut request = collector
        .http
        .post(collector.url(LANGFUSE))
        .header("content-type", PROTOBUF)
        .body(trace.request().encode_to_vec());
    if let Some((public, secret)) = auth {
        request = request.basic_auth(public, Some(secret));
    }
    if let Some(tenant) = tenant_header {
        request = request.header("agentmesh-tenant", tenant).header(
            "agentmesh-service-token",
            mesh_integration::mesh::service_token(),
        );
    }
    request.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_langfuse_endpoint_takes_spans_under_the_tenant_of_the_key() {
    let collector = Collector::start(|_| {}).await;

    // Keys need the tenant header; the secret comes back once.
    let (status, _) = collector.post_json(None, "/api/keys", &json!({})).await;
    assert_eq!(status, 401);
    let (status, key) = collector
        .post_json(Some("acme"), "/api/keys", &json!({}))
        .await;
    assert_eq!(status, 201, "{key}");
    let public = key["public_key"].as_str().unwrap().to_owned();
    let secret = key["secret_key"].as_str().unwrap().to_owned();
    assert!(
        public.starts_with("pk-am-") && secret.starts_with("sk-am-"),
        "{key}"
    );

    // The secret is stored only as a hash, and never listed.
    let db = sea_orm::Database::connect(&collector.database_url)
        .await
        .unwrap();
    let rows = mesh_store::traces::api_key::Entity::find()
        .all(&db)
        .await
        .unwrap();
    db.close().await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].tenant, "acme");
    assert!(!format!("{rows:?}").contains(&secret[6..]));
    let (status, listed) = collector.get("acme", "/api/keys").await;
    assert_eq!(status, 200);
    assert_eq!(listed["data"][0]["public_key"], public.as_str());
    assert!(!listed.to_string().contains(&secret[6..]), "{listed}");
    let (_, listed) = collector.get("globex", "/api/keys").await;
    assert_eq!(listed["data"], json!([]));

    // A good key: the spans land under the key's tenant, whatever header.
    let trace = Trace::new(&[("gpt-4o", 10, 5)]);
    let response =
        langfuse_post(&collector, Some((&public, &secret)), Some("globex"), &trace).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], PROTOBUF);
    collector
        .wait_trace("acme", &trace.id(), trace.count())
        .await;
    let (status, _) = collector
        .get("globex", &format!("/api/traces/{}", trace.id()))
        .await;
    assert_eq!(status, 404);

    // No key, the tenant header alone, a wrong secret, an unknown key.
    let other = Trace::new(&[("gpt-4o", 1, 1)]);
    for (auth, header) in [
        (None, None),
        (None, Some("acme")),
        (Some((public.as_str(), "sk-am-wrong")), None),
        (Some(("pk-am-unknown", secret.as_str())), None),
    ] {
        let response = langfuse_post(&collector, auth, header, &other).await;
        assert_eq!(response.status(), 401, "{auth:?} {header:?}");
        assert!(response.headers().contains_key("www-authenticate"));
    }

    // Revocation: only by the key's own tenant, then the key is dead.
    let path = format!("/api/keys/{public}");
    let revoke = |tenant: &'static str| {
        collector
            .http
            .delete(collector.url(&path))
            .header("agentmesh-tenant", tenant)
            .header(
                "agentmesh-service-token",
                mesh_integration::mesh::service_token(),
            )
            .send()
    };
    assert_eq!(revoke("globex").await.unwrap().status(), 404);
    let response = langfuse_post(&collector, Some((&public, &secret)), None, &other).await;
    assert_eq!(response.status(), 200, "still valid after a foreign revoke");
    assert_eq!(revoke("acme").await.unwrap().status(), 204);
    let late = Trace::new(&[("gpt-4o", 1, 1)]);
    let response = langfuse_post(&collector, Some((&public, &secret)), None, &late).await;
    assert_eq!(response.status(), 401);
    let (_, listed) = collector.get("acme", "/api/keys").await;
    assert!(listed["data"][0]["revoked_at_ms"].is_i64(), "{listed}");

    // A second key of the tenant still works.
    let (_, key2) = collector
        .post_json(Some("acme"), "/api/keys", &json!({}))
        .await;
    let response = langfuse_post(
        &collector,
        Some((
            key2["public_key"].as_str().unwrap(),
            key2["secret_key"].as_str().unwrap(),
        )),
        None,
        &late,
    )
    .await;
    assert_eq!(response.status(), 200);
    collector.wait_trace("acme", &late.id(), late.count()).await;
}

/// Key pairs are cached for AGENTMESH_TRACES_KEY_CACHE_TTL_MS: a key
/// revoked by another replica (here: straight in the shared database) is
/// still taken from the cache until the TTL, refused after it; a revocation
/// through this replica applies at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revoked_key_is_refused_within_the_cache_ttl() {
    use sea_orm::sea_query::Expr;
    use sea_orm::{ColumnTrait as _, QueryFilter as _};
    let ttl = Duration::from_secs(3);
    let collector = Collector::start(|c| c.key_cache_ttl = ttl).await;
    let (_, key) = collector
        .post_json(Some("acme"), "/api/keys", &json!({}))
        .await;
    let public = key["public_key"].as_str().unwrap().to_owned();
    let secret = key["secret_key"].as_str().unwrap().to_owned();
    let post = || async {
        langfuse_post(
            &collector,
            Some((&public, &secret)),
            None,
            &Trace::new(&[("gpt-4o", 1, 1)]),
        )
        .await
        .status()
    };
    let cached_at = tokio::time::Instant::now();
    assert_eq!(post().await, 200);
    let db = sea_orm::Database::connect(&collector.database_url)
        .await
        .unwrap();
    use mesh_store::traces::api_key;
    let revoked = api_key::Entity::update_many()
        .col_expr(api_key::Column::RevokedAtMs, Expr::value(1_i64))
        .filter(api_key::Column::PublicKey.eq(&public))
        .exec(&db)
        .await
        .unwrap();
    db.close().await.unwrap();
    assert_eq!(revoked.rows_affected, 1);
    assert_eq!(post().await, 200, "served from the cache within the TTL");
    assert!(
        cached_at.elapsed() < ttl,
        "too slow to observe the cache; the assertion above proves nothing"
    );
    tokio::time::sleep_until(cached_at + ttl + Duration::from_millis(200)).await;
    assert_eq!(post().await, 401, "refused once the TTL is over");

    // Revoked through this replica: refused at once, cached or not.
    let (_, key) = collector
        .post_json(Some("acme"), "/api/keys", &json!({}))
        .await;
    let (public, secret) = (
        key["public_key"].as_str().unwrap().to_owned(),
        key["secret_key"].as_str().unwrap().to_owned(),
    );
    let trace = Trace::new(&[("gpt-4o", 1, 1)]);
    let status = langfuse_post(&collector, Some((&public, &secret)), None, &trace)
        .await
        .status();
    assert_eq!(status, 200);
    let response = collector
        .http
        .delete(collector.url(&format!("/api/keys/{public}")))
        .header("agentmesh-tenant", "acme")
        .header(
            "agentmesh-service-token",
            mesh_integration::mesh::service_token(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let status = langfuse_post(&collector, Some((&public, &secret)), None, &trace)
        .await
        .status();
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scores_attach_to_traces_and_observations_within_their_tenant() {
    let collector = Collector::start(|_| {}).await;
    let trace = Trace::new(&[("gpt-4o", 10, 5)]);
    collector.export("acme", &trace.request()).await;
    collector
        .wait_trace("acme", &trace.id(), trace.count())
        .await;

    let (status, numeric) = collector
        .post_json(
            Some("acme"),
            "/api/scores",
            &json!({"trace_id": trace.id(), "name": "accuracy", "value": 0.9, "comment": "close"}),
        )
        .await;
    assert_eq!(status, 201, "{numeric}");
    assert_eq!(numeric["data_type"], "NUMERIC");
    // Langfuse's camelCase spelling, on the generation.
    let (status, categorical) = collector
        .post_json(
            Some("acme"),
            "/api/scores",
            &json!({"traceId": trace.id(), "observationId": trace.span_id(1),
                    "name": "tone", "value": "polite"}),
        )
        .await;
    assert_eq!(status, 201, "{categorical}");
    // Another tenant scoring the same trace id only scores its own.
    let (status, _) = collector
        .post_json(
            Some("globex"),
            "/api/scores",
            &json!({"trace_id": trace.id(), "name": "accuracy", "value": 0}),
        )
        .await;
    assert_eq!(status, 201);

    let (_, body) = collector
        .get("acme", &format!("/api/traces/{}", trace.id()))
        .await;
    let scores = body["scores"].as_array().unwrap();
    assert_eq!(scores.len(), 2, "{body}");
    assert_eq!(scores[0]["name"], "accuracy");
    assert!(close(&scores[0]["value"], 0.9));
    assert_eq!(scores[0]["comment"], "close");
    assert!(scores[0]["observation_id"].is_null());
    assert_eq!(scores[1]["value"], "polite");
    assert_eq!(scores[1]["data_type"], "CATEGORICAL");
    assert_eq!(scores[1]["observation_id"], trace.span_id(1).as_str());
    let (status, _) = collector
        .get("globex", &format!("/api/traces/{}", trace.id()))
        .await;
    assert_eq!(status, 404);

    // Validation names the field; no tenant is 401.
    for (body, field) in [
        (json!({"trace_id": trace.id(), "value": 1}), "name"),
        (
            json!({"trace_id": "nope", "name": "n", "value": 1}),
            "trace_id",
        ),
        (
            json!({"trace_id": trace.id(), "observation_id": "zz", "name": "n", "value": 1}),
            "observation_id",
        ),
        (
            json!({"trace_id": trace.id(), "name": "n", "value": {}}),
            "value",
        ),
    ] {
        let (status, error) = collector
            .post_json(Some("acme"), "/api/scores", &body)
            .await;
        assert_eq!(status, 400, "{body}: {error}");
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(field), "{body}: {message}");
    }
    let response = collector
        .http
        .post(collector.url("/api/scores"))
        .header("agentmesh-tenant", "acme")
        .header(
            "agentmesh-service-token",
            mesh_integration::mesh::service_token(),
        )
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let (status, _) = collector
        .post_json(
            None,
            "/api/scores",
            &json!({"trace_id": trace.id(), "name": "n", "value": 1}),
        )
        .await;
    assert_eq!(status, 401);
}
