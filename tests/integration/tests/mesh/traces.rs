#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

//! The trace-collector end to end against real NATS JetStream and
//! PostgreSQL: OTLP exports over HTTP (protobuf, JSON, gzip) and gRPC
//! become trace trees through TRACES and the writer; invalid spans,
//! malformed requests, duplicates, out-of-order arrival, tenant isolation
//! and retention.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mesh_integration::{Nats, fresh_postgres};
use mesh_runtime::SharedConfig;
use prost::Message as _;
use sea_orm::{ColumnTrait as _, EntityTrait as _, PaginatorTrait as _, QueryFilter as _};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use trace_collector::opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use trace_collector::opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use trace_collector::opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use trace_collector::opentelemetry_proto::tonic::resource::v1::Resource;
use trace_collector::opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

const PROTOBUF: &str = "application/x-protobuf";

struct Collector {
    _nats: Nats,
    database_url: String,
    shared: SharedConfig,
    running: Option<trace_collector::Running>,
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
        let mut collector = Self {
            _nats: nats,
            database_url,
            shared,
            running: None,
            stop: CancellationToken::new(),
            http: reqwest::Client::new(),
            _data: data,
        };
        collector.restart(tweak).await;
        collector
    }

    /// (Re)starts the service on the same NATS and database.
    async fn restart(&mut self, tweak: impl FnOnce(&mut trace_collector::Config)) {
        if let Some(running) = self.running.take() {
            self.stop.cancel();
            running.stopped.wait().await.unwrap();
            self.stop = CancellationToken::new();
        }
        let mut config =
            trace_collector::Config::ephemeral(self.shared.clone(), self._data.path().to_owned())
                .unwrap();
        tweak(&mut config);
        let running = trace_collector::start(config, self.stop.clone())
            .await
            .unwrap();
        self.running = Some(running);
    }

    fn running(&self) -> &trace_collector::Running {
        self.running.as_ref().unwrap()
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.running().http_addr)
    }

    async fn post(
        &self,
        tenant: Option<&str>,
        content_type: &str,
        encoding: Option<&str>,
        body: Vec<u8>,
    ) -> reqwest::Response {
        let mut request = self
            .http
            .post(self.url("/v1/traces"))
            .header("content-type", content_type)
            .body(body);
        if let Some(tenant) = tenant {
            request = request.header("agentmesh-tenant", tenant).header(
                "agentmesh-service-token",
                mesh_integration::mesh::service_token(),
            );
        }
        if let Some(encoding) = encoding {
            request = request.header("content-encoding", encoding);
        }
        request.send().await.unwrap()
    }

    async fn export_protobuf(
        &self,
        tenant: &str,
        request: &ExportTraceServiceRequest,
    ) -> ExportTraceServiceResponse {
        let response = self
            .post(Some(tenant), PROTOBUF, None, request.encode_to_vec())
            .await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], PROTOBUF);
        ExportTraceServiceResponse::decode(response.bytes().await.unwrap()).unwrap()
    }

    async fn get(&self, tenant: Option<&str>, path: &str) -> (u16, Value) {
        let mut request = self.http.get(self.url(path));
        if let Some(tenant) = tenant {
            request = request.header("agentmesh-tenant", tenant).header(
                "agentmesh-service-token",
                mesh_integration::mesh::service_token(),
            );
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    /// Polls until the trace has `count` observations and returns it.
    async fn wait_trace(&self, tenant: &str, trace_id: &str, count: i64) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let (status, body) = self
                .get(Some(tenant), &format!("/api/traces/{trace_id}"))
                .await;
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

    /// Waits until the writer has taken and acked everything on TRACES.
    async fn wait_drained(&self) {
        let bus = mesh_bus::Bus::connect(&self.shared.nats_url, "test", self.shared.bus.clone())
            .await
            .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let lag = bus
                .consumer_lag(mesh_bus::StreamKind::Traces, trace_collector::CONSUMER)
                .await
                .unwrap();
            if lag.total() == 0 {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "TRACES never drained"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn stored_observations(&self, trace_id: &str) -> u64 {
        let db = sea_orm::Database::connect(&self.database_url)
            .await
            .unwrap();
        use mesh_store::traces::observation;
        let n = observation::Entity::find()
            .filter(observation::Column::TraceId.eq(trace_id))
            .count(&db)
            .await
            .unwrap();
        db.close().await.unwrap();
        n
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

fn attr(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn text(key: &str, value: &str) -> KeyValue {
    attr(key, any_value::Value::StringValue(value.to_owned()))
}

/// The spans of one agent task: `invoke_agent support` with a
/// `chat smollm2` child (10 in, 5 out tokens) and an `execute_tool search`
/// child. Returns (trace id, [root, chat, tool]).
struct AgentTrace {
    trace_id: Vec<u8>,
    spans: Vec<Span>,
}

impl AgentTrace {
    fn new(start_nanos: u64) -> Self {
        let trace_id = random_bytes(16);
        let (root_id, chat_id, tool_id) = (random_bytes(8), random_bytes(8), random_bytes(8));
        let ms = 1_000_000;
        let span = |id: &Vec<u8>, parent: &Vec<u8>, name: &str, from: u64, to: u64| Span {
            trace_id: trace_id.clone(),
            span_id: id.clone(),
            parent_span_id: parent.clone(),
            name: name.to_owned(),
            start_time_unix_nano: start_nanos + from * ms,
            end_time_unix_nano: start_nanos + to * ms,
            ..Default::default()
        };
        let mut root = span(&root_id, &Vec::new(), "invoke_agent support", 0, 100);
        root.attributes = vec![
            text("gen_ai.operation.name", "invoke_agent"),
            text("gen_ai.agent.name", "support"),
            text("session.id", "session-1"),
        ];
        let mut chat = span(&chat_id, &root_id, "chat smollm2", 10, 60);
        chat.attributes = vec![
            text("gen_ai.operation.name", "chat"),
            text("gen_ai.request.model", "smollm2"),
            attr("gen_ai.usage.input_tokens", any_value::Value::IntValue(10)),
            attr("gen_ai.usage.output_tokens", any_value::Value::IntValue(5)),
        ];
        let mut tool = span(&tool_id, &root_id, "execute_tool search", 70, 90);
        tool.attributes = vec![
            text("gen_ai.operation.name", "execute_tool"),
            text("gen_ai.tool.name", "search"),
        ];
        Self {
            trace_id,
            spans: vec![root, chat, tool],
        }
    }

    fn id(&self) -> String {
        hex(&self.trace_id)
    }

    fn request(&self, which: &[usize]) -> ExportTraceServiceRequest {
        request_of(which.iter().map(|i| self.spans[*i].clone()).collect())
    }

    fn all(&self) -> ExportTraceServiceRequest {
        self.request(&[0, 1, 2])
    }

    fn span_id(&self, i: usize) -> String {
        hex(&self.spans[i].span_id)
    }
}

fn request_of(spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![text("service.name", "agent-worker")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// Asserts the tree of an [`AgentTrace`]: one root agent with a generation
/// and a tool under it, tokens rolled up.
fn assert_agent_tree(trace: &AgentTrace, body: &Value) {
    assert_eq!(body["trace_id"], trace.id());
    assert_eq!(body["name"], "invoke_agent support");
    assert_eq!(body["session_id"], "session-1");
    assert_eq!(body["input_tokens"], 10);
    assert_eq!(body["output_tokens"], 5);
    assert_eq!(body["latency_ms"], 100);
    let roots = body["observations"].as_array().unwrap();
    assert_eq!(roots.len(), 1, "{body}");
    let root = &roots[0];
    assert_eq!(root["span_id"], trace.span_id(0));
    assert_eq!(root["type"], "agent");
    assert_eq!(root["parent_span_id"], Value::Null);
    assert_eq!(root["total_input_tokens"], 10);
    assert_eq!(root["total_output_tokens"], 5);
    let children = root["children"].as_array().unwrap();
    assert_eq!(children.len(), 2, "{body}");
    let (chat, tool) = (&children[0], &children[1]);
    assert_eq!(chat["span_id"], trace.span_id(1));
    assert_eq!(chat["name"], "chat smollm2");
    assert_eq!(chat["type"], "generation");
    assert_eq!(chat["model"], "smollm2");
    assert_eq!(chat["parent_span_id"], trace.span_id(0));
    assert_eq!(chat["input_tokens"], 10);
    assert_eq!(chat["output_tokens"], 5);
    assert_eq!(chat["latency_ms"], 50);
    assert_eq!(tool["span_id"], trace.span_id(2));
    assert_eq!(tool["type"], "tool");
    assert_eq!(tool["parent_span_id"], trace.span_id(0));
    assert_eq!(
        chat["attributes"]["resource"]["service.name"],
        "agent-worker"
    );
}

/// A gzip member with one stored (uncompressed) deflate block per 64 KiB:
/// a valid gzip stream any decoder must accept, built here without a
/// compression library.
fn gzip_stored(data: &[u8]) -> Vec<u8> {
    let mut crc = 0xffff_ffff_u32;
    for byte in data {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    let crc = !crc;
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
    let chunks: Vec<&[u8]> = data.chunks(65_535).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        out.push(u8::from(i + 1 == chunks.len()));
        let len = u16::try_from(chunk.len()).unwrap();
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    if chunks.is_empty() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&u32::try_from(data.len()).unwrap().to_le_bytes());
    out
}

/// Real (deflate-compressed) gzip: a megabyte of zeros becomes about a
/// kilobyte.
fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

/// The OTLP JSON mapping of an [`AgentTrace`], written out by hand the way
/// an SDK sends it (hex ids, nanos and int values as strings).
fn otlp_json(trace: &AgentTrace) -> Value {
    let span = |i: usize, parent: &str, attributes: Value| {
        let s = &trace.spans[i];
        json!({
            "traceId": trace.id(),
            "spanId": hex(&s.span_id),
            "parentSpanId": parent,
            "name": s.name,
            "kind": 1,
            "startTimeUnixNano": s.start_time_unix_nano.to_string(),
            "endTimeUnixNano": s.end_time_unix_nano.to_string(),
            "attributes": attributes,
            "status": {}
        })
    };
    let root = trace.span_id(0);
    json!({
        "resourceSpans": [{
            "resource": {"attributes": [
                {"key": "service.name", "value": {"stringValue": "agent-worker"}}
            ]},
            "scopeSpans": [{
                "scope": {"name": "agentmesh"},
                "spans": [
                    span(0, "", json!([
                        {"key": "gen_ai.operation.name", "value": {"stringValue": "invoke_agent"}},
                        {"key": "session.id", "value": {"stringValue": "session-1"}}
                    ])),
                    span(1, &root, json!([
                        {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
                        {"key": "gen_ai.request.model", "value": {"stringValue": "smollm2"}},
                        {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "10"}},
                        {"key": "gen_ai.usage.output_tokens", "value": {"intValue": 5}}
                    ])),
                    span(2, &root, json!([
                        {"key": "gen_ai.operation.name", "value": {"stringValue": "execute_tool"}},
                        {"key": "gen_ai.tool.name", "value": {"stringValue": "search"}}
                    ]))
                ]
            }]
        }]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn otlp_exports_over_http_and_grpc_become_trace_trees() {
    let collector = Collector::start(|_| {}).await;
    let tenant = "acme";

    // OTLP/HTTP protobuf.
    let proto = AgentTrace::new(now_nanos());
    let response = collector.export_protobuf(tenant, &proto.all()).await;
    assert_eq!(response.partial_success, None);

    // OTLP/HTTP JSON.
    let json_trace = AgentTrace::new(now_nanos());
    let response = collector
        .post(
            Some(tenant),
            "application/json",
            None,
            serde_json::to_vec(&otlp_json(&json_trace)).unwrap(),
        )
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: Value = response.json().await.unwrap();
    assert!(
        body.get("partialSuccess").is_none_or(Value::is_null),
        "{body}"
    );

    // OTLP/HTTP protobuf, gzip.
    let gzipped = AgentTrace::new(now_nanos());
    let response = collector
        .post(
            Some(tenant),
            PROTOBUF,
            Some("gzip"),
            gzip_stored(&gzipped.all().encode_to_vec()),
        )
        .await;
    assert_eq!(response.status(), 200);

    // OTLP/gRPC with the opentelemetry-proto client.
    let grpc_trace = AgentTrace::new(now_nanos());
    let mut client =
        TraceServiceClient::connect(format!("http://{}", collector.running().grpc_addr))
            .await
            .unwrap();
    let mut request = tonic::Request::new(grpc_trace.all());
    request
        .metadata_mut()
        .insert("agentmesh-tenant", tenant.parse().unwrap());
    request.metadata_mut().insert(
        "agentmesh-service-token",
        mesh_integration::mesh::service_token().parse().unwrap(),
    );
    let response = client.export(request).await.unwrap().into_inner();
    assert_eq!(response.partial_success, None);
    let status = client.export(grpc_trace.all()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);

    for trace in [&proto, &json_trace, &gzipped, &grpc_trace] {
        let body = collector.wait_trace(tenant, &trace.id(), 3).await;
        assert_agent_tree(trace, &body);
    }
    let (status, list) = collector.get(Some(tenant), "/api/traces").await;
    assert_eq!(status, 200);
    assert_eq!(list["data"].as_array().unwrap().len(), 4, "{list}");
    assert_eq!(list["next_cursor"], Value::Null);

    let metrics = reqwest::get(format!("http://{}/metrics", collector.running().admin_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("traces_spans_accepted_total 12"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partial_success_rejects_invalid_spans_and_stores_the_rest() {
    let collector = Collector::start(|_| {}).await;
    let trace = AgentTrace::new(now_nanos());
    let mut invalid = trace.spans[1].clone();
    invalid.span_id = vec![0; 8];
    invalid.name = "zero span id".to_owned();
    let mut spans = trace.spans.clone();
    spans.push(invalid);
    let response = collector.export_protobuf("acme", &request_of(spans)).await;
    let partial = response.partial_success.unwrap();
    assert_eq!(partial.rejected_spans, 1);
    assert!(partial.error_message.contains("span_id"), "{partial:?}");

    let body = collector.wait_trace("acme", &trace.id(), 3).await;
    assert_agent_tree(&trace, &body);
    collector.wait_drained().await;
    assert_eq!(collector.stored_observations(&trace.id()).await, 3);

    // A batch with nothing valid is answered, not enqueued.
    let mut all_bad = trace.spans[2].clone();
    all_bad.trace_id = vec![0; 16];
    let response = collector
        .export_protobuf("acme", &request_of(vec![all_bad]))
        .await;
    assert_eq!(response.partial_success.unwrap().rejected_spans, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn duplicate_and_out_of_order_spans_are_stored_once_in_the_right_tree() {
    let collector = Collector::start(|_| {}).await;
    let trace = AgentTrace::new(now_nanos());

    // Children before their parent: visible at once, as orphans.
    collector
        .export_protobuf("acme", &trace.request(&[1, 2]))
        .await;
    let early = collector.wait_trace("acme", &trace.id(), 2).await;
    assert_eq!(early["name"], Value::Null, "no root yet: {early}");
    assert_eq!(early["observations"].as_array().unwrap().len(), 2);

    // Then the root in a batch that repeats a stored child (the writer
    // must store the root and ignore the duplicate), then the whole batch
    // twice (a client retry: deduplicated on the bus by its Nats-Msg-Id).
    collector
        .export_protobuf("acme", &trace.request(&[0, 1]))
        .await;
    collector.export_protobuf("acme", &trace.all()).await;
    collector.export_protobuf("acme", &trace.all()).await;
    let body = collector.wait_trace("acme", &trace.id(), 3).await;
    collector.wait_drained().await;
    assert_eq!(collector.stored_observations(&trace.id()).await, 3);
    let body_after = collector.wait_trace("acme", &trace.id(), 3).await;
    assert_eq!(body["observation_count"], body_after["observation_count"]);
    assert_agent_tree(&trace, &body_after);
    let metrics = reqwest::get(format!("http://{}/metrics", collector.running().admin_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("traces_store_failures_total 0"),
        "{metrics}"
    );
    // 2 + 2 + 3 spans reached the writer (the retry was deduplicated).
    assert!(metrics.contains("traces_spans_stored_total 7"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_requests_get_otlp_errors_and_the_collector_stays_up() {
    let collector = Collector::start(|c| c.max_body_bytes = 64 * 1024).await;

    let response = collector
        .post(Some("acme"), PROTOBUF, None, vec![0xff, 0xff, 0xff, 0x01])
        .await;
    assert_eq!(response.status(), 400);
    let status = response.bytes().await.unwrap();
    // google.rpc.Status: field 1 (code) = 3 INVALID_ARGUMENT, then the message.
    assert_eq!(&status[..2], &[0x08, 3], "{status:?}");
    assert!(String::from_utf8_lossy(&status).contains("ExportTraceServiceRequest"));

    let response = collector
        .post(
            Some("acme"),
            "application/json",
            None,
            b"{\"resourceSpans\": 7}".to_vec(),
        )
        .await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], 3);
    assert!(
        body["message"].as_str().unwrap().contains("OTLP JSON"),
        "{body}"
    );

    let response = collector
        .post(Some("acme"), "text/plain", None, b"hello".to_vec())
        .await;
    assert_eq!(response.status(), 415);

    // Just over the limit: the server may answer before reading the rest,
    // so keep the excess small enough for the socket buffers.
    let response = collector
        .post(Some("acme"), PROTOBUF, None, vec![0; 65 * 1024])
        .await;
    assert_eq!(response.status(), 413);
    // A small gzip body that inflates past the limit is refused too.
    let response = collector
        .post(
            Some("acme"),
            PROTOBUF,
            Some("gzip"),
            gzip(&vec![0; 1024 * 1024]),
        )
        .await;
    assert_eq!(response.status(), 413);
    let response = collector
        .post(Some("acme"), PROTOBUF, Some("gzip"), b"not gzip".to_vec())
        .await;
    assert_eq!(response.status(), 400);

    let trace = AgentTrace::new(now_nanos());
    let response = collector
        .post(None, PROTOBUF, None, trace.all().encode_to_vec())
        .await;
    assert_eq!(response.status(), 401);
    let response = collector
        .post(
            Some("Not.A.Tenant"),
            PROTOBUF,
            None,
            trace.all().encode_to_vec(),
        )
        .await;
    assert_eq!(response.status(), 400);

    // Still up: a valid export lands.
    collector.export_protobuf("acme", &trace.all()).await;
    let body = collector.wait_trace("acme", &trace.id(), 3).await;
    assert_agent_tree(&trace, &body);
    let ready = reqwest::get(format!("http://{}/readyz", collector.running().admin_addr))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queries_are_isolated_per_tenant_and_paginated_newest_first() {
    let collector = Collector::start(|_| {}).await;
    let base = now_nanos() - 60_000_000_000;
    let traces: Vec<AgentTrace> = (0..3)
        .map(|i| AgentTrace::new(base + i * 1_000_000_000))
        .collect();
    for trace in &traces {
        collector.export_protobuf("acme", &trace.all()).await;
    }
    for trace in &traces {
        collector.wait_trace("acme", &trace.id(), 3).await;
    }

    // Another tenant sees nothing of acme's.
    let (status, _) = collector
        .get(Some("globex"), &format!("/api/traces/{}", traces[0].id()))
        .await;
    assert_eq!(status, 404);
    let (status, list) = collector.get(Some("globex"), "/api/traces").await;
    assert_eq!(status, 200);
    assert_eq!(list["data"], json!([]));
    let (status, _) = collector.get(None, "/api/traces").await;
    assert_eq!(status, 401);

    // Newest first, two pages.
    let (status, page) = collector.get(Some("acme"), "/api/traces?limit=2").await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["trace_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [traces[2].id(), traces[1].id()]);
    let cursor = page["next_cursor"].as_str().unwrap();
    let (_, page) = collector
        .get(
            Some("acme"),
            &format!("/api/traces?limit=2&cursor={cursor}"),
        )
        .await;
    assert_eq!(page["data"].as_array().unwrap().len(), 1);
    assert_eq!(page["data"][0]["trace_id"], traces[0].id());
    assert_eq!(page["next_cursor"], Value::Null);
    let (status, _) = collector
        .get(Some("acme"), "/api/traces?cursor=garbage")
        .await;
    assert_eq!(status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn aggregates_bucket_per_agent_and_model_with_percentiles_per_tenant() {
    let collector = Collector::start(|c| c.aggregate_max_buckets = 48).await;
    // Three acme traces and one globex trace in the same minute.
    let base = now_nanos() - 60_000_000_000;
    let acme: Vec<AgentTrace> = (0..3)
        .map(|i| AgentTrace::new(base + i * 1_000_000_000))
        .collect();
    for trace in &acme {
        collector.export_protobuf("acme", &trace.all()).await;
    }
    let globex = AgentTrace::new(base);
    collector.export_protobuf("globex", &globex.all()).await;
    for trace in &acme {
        collector.wait_trace("acme", &trace.id(), 3).await;
    }
    collector.wait_trace("globex", &globex.id(), 3).await;

    let from = base / 1_000_000 - 3_600_000;
    let (status, by_agent) = collector
        .get(
            Some("acme"),
            &format!("/api/aggregates?by=agent&interval=1d&from_ms={from}"),
        )
        .await;
    assert_eq!(status, 200, "{by_agent}");
    assert_eq!(by_agent["unit"], "trace");
    let buckets = by_agent["data"].as_array().unwrap();
    assert_eq!(buckets.len(), 1, "{by_agent}");
    let bucket = &buckets[0];
    assert_eq!(bucket["agent"], "support");
    assert_eq!(bucket["count"], 3);
    assert_eq!(bucket["errors"], 0);
    assert_eq!(
        (
            bucket["input_tokens"].clone(),
            bucket["output_tokens"].clone()
        ),
        (json!(30), json!(15))
    );
    // PostgreSQL's percentile_cont: every trace took 100 ms.
    assert_eq!(bucket["latency_ms"]["p50"], 100.0, "{bucket}");
    assert_eq!(bucket["latency_ms"]["p95"], 100.0, "{bucket}");
    assert_eq!(bucket["latency_ms"]["max"], 100);

    let (status, by_model) = collector
        .get(
            Some("acme"),
            &format!("/api/aggregates?by=model&interval=1d&from_ms={from}&model=smollm2"),
        )
        .await;
    assert_eq!(status, 200, "{by_model}");
    assert_eq!(by_model["unit"], "generation");
    assert_eq!(by_model["data"][0]["model"], "smollm2");
    assert_eq!(by_model["data"][0]["count"], 3);
    assert_eq!(by_model["data"][0]["latency_ms"]["p50"], 50.0);

    // globex counts its one trace, never acme's; no tenant is a 401.
    let (_, theirs) = collector
        .get(
            Some("globex"),
            &format!("/api/aggregates?interval=1d&from_ms={from}"),
        )
        .await;
    assert_eq!(theirs["data"][0]["count"], 1, "{theirs}");
    let (status, _) = collector.get(None, "/api/aggregates").await;
    assert_eq!(status, 401);

    // Bad input: 400 naming the parameter; the bucket bound is the config's.
    for (query, field) in [
        ("by=user", "by"),
        ("interval=soon", "interval"),
        ("interval=1m", "interval"),
        ("from_ms=10&to_ms=5", "from_ms"),
        ("from_ms=yesterday", "from_ms"),
        ("model=smollm2", "model"),
    ] {
        let (status, body) = collector
            .get(Some("acme"), &format!("/api/aggregates?{query}"))
            .await;
        assert_eq!(status, 400, "{query}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(&format!("{field}:")), "{query}: {message}");
    }
}

/// The value of an unlabelled counter on the collector's `/metrics`.
async fn counter(collector: &Collector, name: &str) -> f64 {
    let text = reqwest::get(format!("http://{}/metrics", collector.running().admin_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("{name} not on /metrics:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

/// Polls until `name` reaches `want`.
async fn wait_counter(collector: &Collector, name: &str, want: f64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let have = counter(collector, name).await;
        if have >= want {
            assert_eq!(have, want, "{name} overshot");
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} stayed at {have}, never {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn forward_to(url: String) -> trace_collector::forward::ForwardConfig {
    trace_collector::forward::ForwardConfig {
        url,
        headers: Vec::new(),
        attempts: 3,
        timeout: Duration::from_secs(5),
        backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        // The target is an agentmesh collector on the same mesh key.
        service_token: true,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn accepted_spans_are_forwarded_to_another_collector_under_their_tenant() {
    let target = Collector::start(|_| {}).await;
    let url = target.url("/v1/traces");
    let source = Collector::start(move |c| c.forward = Some(forward_to(url))).await;
    let trace = AgentTrace::new(now_nanos() - 1_000_000_000);
    // One invalid span beside it: refused by the receiver, never forwarded.
    let mut request = trace.all();
    request.resource_spans[0].scope_spans[0].spans.push(Span {
        trace_id: vec![0; 16],
        span_id: random_bytes(8),
        name: "all-zero trace id".to_owned(),
        ..Default::default()
    });
    let response = source.export_protobuf("acme", &request).await;
    assert_eq!(response.partial_success.unwrap().rejected_spans, 1);

    source.wait_trace("acme", &trace.id(), 3).await;
    let forwarded = target.wait_trace("acme", &trace.id(), 3).await;
    assert_agent_tree(&trace, &forwarded);
    let (status, _) = target
        .get(Some("globex"), &format!("/api/traces/{}", trace.id()))
        .await;
    assert_eq!(status, 404, "forwarded under its own tenant only");
    wait_counter(&source, "traces_spans_forwarded_total", 3.0).await;
    assert_eq!(counter(&source, "traces_forward_failures_total").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_or_refusing_forward_target_never_keeps_spans_from_being_stored() {
    // A port nothing listens on: every try is a transport error, retried.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}/v1/traces", dead.local_addr().unwrap());
    drop(dead);
    let source = Collector::start(move |c| c.forward = Some(forward_to(dead_url))).await;
    let trace = AgentTrace::new(now_nanos() - 1_000_000_000);
    source.export_protobuf("acme", &trace.all()).await;
    source.wait_trace("acme", &trace.id(), 3).await;
    wait_counter(&source, "traces_forward_failures_total", 1.0).await;
    assert_eq!(counter(&source, "traces_forward_retries_total").await, 2.0);
    assert_eq!(counter(&source, "traces_spans_forwarded_total").await, 0.0);
    source.wait_drained().await;

    // A target that refuses (405 on a query route): not retried.
    let target = Collector::start(|_| {}).await;
    let refusing = target.url("/api/traces");
    let source = Collector::start(move |c| c.forward = Some(forward_to(refusing))).await;
    let trace = AgentTrace::new(now_nanos() - 1_000_000_000);
    source.export_protobuf("acme", &trace.all()).await;
    source.wait_trace("acme", &trace.id(), 3).await;
    wait_counter(&source, "traces_forward_failures_total", 1.0).await;
    assert_eq!(counter(&source, "traces_forward_retries_total").await, 0.0);
}

/// The project venv's Python, checked to have the OpenTelemetry SDK.
fn otel_python() -> std::path::PathBuf {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = root.join(".venv/bin/python");
    let has_sdk = std::process::Command::new(&python)
        .args([
            "-c",
            "import opentelemetry.sdk.trace, opentelemetry.exporter.otlp.proto.http.trace_exporter, opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
        ])
        .output()
        .is_ok_and(|out| out.status.success());
    assert!(
        has_sdk,
        "{} cannot import the OpenTelemetry SDK and OTLP exporters: run scripts/test, which installs them",
        python.display()
    );
    python
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_official_opentelemetry_python_sdk_exports_over_http_and_grpc() {
    let python = otel_python();
    let script = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../scripts/otel-client-check.py");
    let collector = Collector::start(|_| {}).await;
    let endpoints = [
        ("http", format!("http://{}", collector.running().http_addr)),
        ("grpc", format!("http://{}", collector.running().grpc_addr)),
    ];
    for (protocol, endpoint) in endpoints {
        let run = tokio::process::Command::new(&python)
            .arg(&script)
            .args([
                "--protocol",
                protocol,
                "--endpoint",
                &endpoint,
                "--tenant",
                "acme",
                "--service-token",
                &mesh_integration::mesh::service_token(),
            ])
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(Duration::from_secs(120), run)
            .await
            .expect("the SDK took over 120 s")
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{protocol}: stdout:\n{stdout}\nstderr:\n{stderr}"
        );
        let printed: Value = serde_json::from_str(stdout.trim()).unwrap();
        let trace_id = printed["trace_id"].as_str().unwrap();

        let trace = collector.wait_trace("acme", trace_id, 3).await;
        assert_eq!(trace["agent"], "support", "{protocol}: {trace}");
        assert_eq!(trace["session_id"], format!("python-{protocol}"));
        assert_eq!(
            (
                trace["input_tokens"].clone(),
                trace["output_tokens"].clone()
            ),
            (json!(12), json!(7))
        );
        assert_eq!(trace["error_count"], 1);
        let root = &trace["observations"][0];
        assert_eq!(root["type"], "agent", "{protocol}: {trace}");
        let children = root["children"].as_array().unwrap();
        let kinds: Vec<&str> = children
            .iter()
            .map(|c| c["type"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["generation", "tool"], "{protocol}: {trace}");
        assert_eq!(children[0]["model"], "smollm2");
        assert_eq!(children[1]["level"], "ERROR");
        assert_eq!(children[1]["status_message"], "search timed out");
        // The tenant header decided the tenant: nobody else sees it.
        let (status, _) = collector
            .get(Some("globex"), &format!("/api/traces/{trace_id}"))
            .await;
        assert_eq!(status, 404);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retention_deletes_traces_past_their_age() {
    // First without retention, so both traces are surely stored.
    let mut collector = Collector::start(|c| c.retention = Duration::ZERO).await;
    let old = AgentTrace::new(now_nanos() - 3 * 3600 * 1_000_000_000);
    let fresh = AgentTrace::new(now_nanos());
    collector.export_protobuf("acme", &old.all()).await;
    collector.export_protobuf("acme", &fresh.all()).await;
    collector.wait_trace("acme", &old.id(), 3).await;
    collector.wait_trace("acme", &fresh.id(), 3).await;

    // Then with a one-hour retention swept every 100 ms.
    collector
        .restart(|c| {
            c.retention = Duration::from_secs(3600);
            c.retention_interval = Duration::from_millis(100);
        })
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (status, _) = collector
            .get(Some("acme"), &format!("/api/traces/{}", old.id()))
            .await;
        if status == 404 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "old trace never deleted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(collector.stored_observations(&old.id()).await, 0);
    assert_eq!(collector.stored_observations(&fresh.id()).await, 3);
    let body = collector.wait_trace("acme", &fresh.id(), 3).await;
    assert_agent_tree(&fresh, &body);
}

async fn list_ids(collector: &Collector, query: &str) -> Vec<String> {
    let (status, page) = collector
        .get(Some("acme"), &format!("/api/traces?{query}"))
        .await;
    assert_eq!(status, 200, "{query}: {page}");
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["trace_id"].as_str().unwrap().to_owned())
        .collect()
}

fn set_attr(span: &mut Span, kv: KeyValue) {
    span.attributes.retain(|a| a.key != kv.key);
    span.attributes.push(kv);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_list_filters_by_agent_session_user_time_status_and_latency() {
    use trace_collector::opentelemetry_proto::tonic::trace::v1::{Status, status::StatusCode};
    let collector = Collector::start(|_| {}).await;
    let base_ms: u64 = now_nanos() / 1_000_000 - 60_000;
    let mut traces: Vec<AgentTrace> = (0..3)
        .map(|i| AgentTrace::new((base_ms + i * 1000) * 1_000_000))
        .collect();
    set_attr(&mut traces[0].spans[0], text("user.id", "u-1"));
    // t1: another agent, session and user, and a failed model call.
    set_attr(
        &mut traces[1].spans[0],
        text("gen_ai.agent.name", "billing"),
    );
    set_attr(&mut traces[1].spans[0], text("session.id", "s-2"));
    set_attr(&mut traces[1].spans[0], text("user.id", "u-2"));
    traces[1].spans[1].status = Some(Status {
        message: "backend unavailable".to_owned(),
        code: StatusCode::Error as i32,
    });
    // t2: slow.
    traces[2].spans[0].end_time_unix_nano += 400 * 1_000_000;
    for trace in &traces {
        collector.export_protobuf("acme", &trace.all()).await;
    }
    for trace in &traces {
        collector.wait_trace("acme", &trace.id(), 3).await;
    }

    let (t0, t1, t2) = (traces[0].id(), traces[1].id(), traces[2].id());
    assert_eq!(
        list_ids(&collector, "agent=support").await,
        [t2.as_str(), t0.as_str()]
    );
    assert_eq!(list_ids(&collector, "agent=billing").await, [t1.as_str()]);
    assert_eq!(list_ids(&collector, "session_id=s-2").await, [t1.as_str()]);
    assert_eq!(list_ids(&collector, "user_id=u-1").await, [t0.as_str()]);
    assert_eq!(list_ids(&collector, "status=error").await, [t1.as_str()]);
    assert_eq!(
        list_ids(&collector, "status=ok").await,
        [t2.as_str(), t0.as_str()]
    );
    assert_eq!(
        list_ids(&collector, "min_latency_ms=300").await,
        [t2.as_str()]
    );
    let window = format!("from_ms={}&to_ms={}", base_ms + 500, base_ms + 1500);
    assert_eq!(list_ids(&collector, &window).await, [t1.as_str()]);
    let (status, _) = collector
        .get(Some("acme"), "/api/traces?status=maybe")
        .await;
    assert_eq!(status, 400);

    let failed = collector.wait_trace("acme", &t1, 3).await;
    assert_eq!(failed["error_count"], 1);
    assert_eq!(failed["agent"], "billing");
    let chat = &failed["observations"][0]["children"][0];
    assert_eq!(chat["level"], "ERROR");
    assert_eq!(chat["status_message"], "backend unavailable");
}

/// A request to the collector's internal gRPC query API as `tenant`.
fn as_tenant<T>(tenant: &str, message: T) -> tonic::Request<T> {
    mesh_runtime::grpc::outgoing(tenant, message).unwrap()
}

/// `agentmesh.v1.TraceQuery` on the internal gRPC port answers what REST
/// answers (the same filters, cursor, tree and aggregates), for the tenant
/// of the metadata only, and names the proto's field in its errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_grpc_query_api_answers_like_rest_per_tenant() {
    use mesh_proto::trace_query_client::TraceQueryClient;
    let collector = Collector::start(|_| {}).await;
    let base = now_nanos() - 60_000_000_000;
    let traces: Vec<AgentTrace> = (0..3)
        .map(|i| AgentTrace::new(base + i * 1_000_000_000))
        .collect();
    for trace in &traces {
        collector.export_protobuf("acme", &trace.all()).await;
    }
    for trace in &traces {
        collector.wait_trace("acme", &trace.id(), 3).await;
    }
    let mut client = TraceQueryClient::connect(format!("http://{}", collector.running().grpc_addr))
        .await
        .unwrap();

    // Newest first, two pages through the same cursor as REST.
    let page = client
        .list_traces(as_tenant(
            "acme",
            mesh_proto::ListTracesRequest {
                page_size: 2,
                agent: "support".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<&str> = page.traces.iter().map(|t| t.trace_id.as_str()).collect();
    assert_eq!(ids, [traces[2].id(), traces[1].id()]);
    let (_, rest) = collector.get(Some("acme"), "/api/traces?limit=2").await;
    assert_eq!(rest["next_cursor"], page.next_page_token.as_str());
    let last = client
        .list_traces(as_tenant(
            "acme",
            mesh_proto::ListTracesRequest {
                page_size: 2,
                page_token: page.next_page_token.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(last.traces.len(), 1);
    assert_eq!(last.traces[0].trace_id, traces[0].id());
    assert_eq!(last.next_page_token, "");
    let summary = &last.traces[0];
    assert_eq!(
        (
            summary.observation_count,
            summary.input_tokens,
            summary.output_tokens
        ),
        (3, 10, 5)
    );
    assert_eq!(summary.agent, "support");
    assert_eq!(summary.latency_ms, 100);
    // Filters are REST's: min latency above every trace, no rows.
    let none = client
        .list_traces(as_tenant(
            "acme",
            mesh_proto::ListTracesRequest {
                min_latency_ms: Some(101),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(none.traces.is_empty(), "{none:?}");

    // One trace as a tree, rolled up.
    let tree = client
        .get_trace(as_tenant(
            "acme",
            mesh_proto::GetTraceRequest {
                trace_id: traces[0].id().to_uppercase(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(tree.trace.as_ref().unwrap().trace_id, traces[0].id());
    assert_eq!(tree.observations.len(), 1);
    let root = &tree.observations[0];
    assert_eq!(
        (root.r#type.as_str(), root.parent_span_id.as_str()),
        ("agent", "")
    );
    assert_eq!((root.total_input_tokens, root.total_output_tokens), (10, 5));
    let kinds: Vec<&str> = root.children.iter().map(|c| c.r#type.as_str()).collect();
    assert_eq!(kinds, ["generation", "tool"]);
    assert_eq!(root.children[0].model, "smollm2");
    assert_eq!(root.children[0].parent_span_id, traces[0].span_id(0));
    let attributes: Value = serde_json::from_str(&root.attributes_json).unwrap();
    assert_eq!(
        attributes["attributes"]["gen_ai.agent.name"], "support",
        "{attributes}"
    );

    // Aggregates: by model, generations.
    let by_model = client
        .aggregates(as_tenant(
            "acme",
            mesh_proto::TraceAggregatesRequest {
                by: "model".into(),
                interval: "1d".into(),
                from_ms: Some(0),
                to_ms: Some(i64::try_from(now_nanos() / 1_000_000).unwrap() + 1),
                ..Default::default()
            },
        ))
        .await;
    // 1d buckets since the epoch are over the default bucket limit.
    let refused = by_model.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(refused.message().starts_with("interval:"), "{refused:?}");
    let by_model = client
        .aggregates(as_tenant(
            "acme",
            mesh_proto::TraceAggregatesRequest {
                by: "model".into(),
                interval: "1h".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (by_model.by.as_str(), by_model.unit.as_str()),
        ("model", "generation")
    );
    let counted: i64 = by_model.buckets.iter().map(|b| b.count).sum();
    assert_eq!(counted, 3, "{by_model:?}");
    assert!(by_model.buckets.iter().all(|b| b.model == "smollm2"));
    assert!(
        by_model.buckets[0]
            .latency
            .as_ref()
            .unwrap()
            .p50_ms
            .is_some()
    );

    // Tenant isolation and bad input, naming the proto's fields.
    let other = client
        .get_trace(as_tenant(
            "globex",
            mesh_proto::GetTraceRequest {
                trace_id: traces[0].id(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(other.code(), tonic::Code::NotFound);
    let listed = client
        .list_traces(as_tenant(
            "globex",
            mesh_proto::ListTracesRequest::default(),
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(listed.traces.is_empty());
    let anonymous = client
        .list_traces(tonic::Request::new(mesh_proto::ListTracesRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), tonic::Code::Unauthenticated);
    for (request, field) in [
        (
            mesh_proto::ListTracesRequest {
                page_token: "garbage".into(),
                ..Default::default()
            },
            "page_token:",
        ),
        (
            mesh_proto::ListTracesRequest {
                page_size: 100_000,
                ..Default::default()
            },
            "page_size:",
        ),
        (
            mesh_proto::ListTracesRequest {
                status: "broken".into(),
                ..Default::default()
            },
            "status:",
        ),
    ] {
        let error = client
            .list_traces(as_tenant("acme", request))
            .await
            .unwrap_err();
        assert_eq!(error.code(), tonic::Code::InvalidArgument, "{field}");
        assert!(error.message().starts_with(field), "{error:?}");
    }
    let error = client
        .get_trace(as_tenant(
            "acme",
            mesh_proto::GetTraceRequest {
                trace_id: "nope".into(),
            },
        ))
        .await
        .unwrap_err();
    assert!(error.message().starts_with("trace_id:"), "{error:?}");
}

/// The writer adds each new observation to its trace's totals exactly once,
/// whatever the interleaving: eight writers store overlapping batches of
/// one trace (every span sent by three of them, in different orders and
/// groupings, the root among them) at once on PostgreSQL; the trace row
/// then equals the sums over the observations stored, and the root's
/// name and agent won.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_add_each_observation_once_to_the_totals() {
    use trace_collector::mapping::ObservationRow;
    let url = fresh_postgres().await.unwrap();
    let db = mesh_store::connect(&url, 16).await.unwrap();
    mesh_store::traces::migrate(&db).await.unwrap();
    let trace_id = hex(&random_bytes(16));
    let other_trace = hex(&random_bytes(16));
    let spans = 240_usize;
    let row = |trace: &str, i: usize| ObservationRow {
        trace_id: trace.to_owned(),
        span_id: format!("{:016x}", i + 1),
        parent_span_id: if i == 0 {
            String::new()
        } else {
            format!("{:016x}", 1)
        },
        name: format!("span {i}"),
        kind: "span",
        start_ms: 1_000 + i64::try_from(i).unwrap(),
        start_ns: (1_000 + i64::try_from(i).unwrap()) * 1_000_000,
        end_ms: 2_000 + i64::try_from(i).unwrap(),
        status_code: "unset",
        status_message: None,
        level: if i.is_multiple_of(7) {
            "ERROR"
        } else {
            "DEFAULT"
        },
        model: None,
        input_tokens: i64::try_from(i).unwrap(),
        output_tokens: 1,
        agent: Some(if i == 0 { "root-agent" } else { "child-agent" }.to_owned()),
        session_id: None,
        user_id: None,
        attributes: json!({}),
        completion_start_ms: None,
        input: None,
        output: None,
        cost: Some(trace_collector::prices::Cost {
            input: 0.0,
            output: 0.0,
            total: 0.5,
        }),
    };
    let writers: Vec<_> = (0..8_usize)
        .map(|w| {
            let db = db.clone();
            // Writer w sends the spans i with i % 8 in {w, w+1, w+2}, in
            // batches of 7, forwards or backwards, plus a span of another
            // trace in every batch.
            let mut mine: Vec<ObservationRow> = (0..spans)
                .filter(|i| (i % 8 + 8 - w) % 8 < 3)
                .map(|i| row(&trace_id, i))
                .collect();
            if w % 2 == 1 {
                mine.reverse();
            }
            let batches: Vec<Vec<ObservationRow>> = mine
                .chunks(7)
                .enumerate()
                .map(|(k, chunk)| {
                    let mut batch = chunk.to_vec();
                    batch.push(row(&other_trace, k));
                    batch
                })
                .collect();
            tokio::spawn(async move {
                for batch in batches {
                    trace_collector::store::store(&db, "acme", batch).await?;
                }
                Ok::<_, sea_orm::DbErr>(())
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap().unwrap();
    }
    let tree = trace_collector::store::get(&db, "acme", &trace_id, 48)
        .await
        .unwrap()
        .unwrap();
    let t = &tree.trace;
    let n = i64::try_from(spans).unwrap();
    assert_eq!(t.observation_count, n);
    assert_eq!(t.error_count, (n + 6) / 7);
    assert_eq!(t.input_tokens, n * (n - 1) / 2);
    assert_eq!(t.output_tokens, n);
    assert!((t.total_cost_usd - 0.5 * n as f64).abs() < 1e-6, "{t:?}");
    assert_eq!((t.start_ms, t.end_ms), (1_000, 2_000 + n - 1));
    assert_eq!(t.name.as_deref(), Some("span 0"));
    assert_eq!(t.agent.as_deref(), Some("root-agent"));
    assert_eq!(tree.observations.len(), 1);
    assert_eq!(tree.observations[0].children.len(), spans - 1);
    // The other trace got each of its spans once too, rolled up the same.
    let other = trace_collector::store::get(&db, "acme", &other_trace, 48)
        .await
        .unwrap()
        .unwrap();
    let stored = i64::try_from(
        other
            .observations
            .iter()
            .map(|o| 1 + o.children.len())
            .sum::<usize>(),
    )
    .unwrap();
    assert_eq!(other.trace.observation_count, stored);
    db.close().await.unwrap();
}
