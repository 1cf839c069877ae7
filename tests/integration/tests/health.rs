#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

//! Every service answers `/healthz`, `/readyz`, `/metrics` and gRPC health,
//! and the queue services declare the consumers KEDA scales them on.

use mesh_bus::StreamKind;
use mesh_integration::{Mesh, MeshOptions};
use tokio_util::sync::CancellationToken;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

async fn grpc_serving(addr: std::net::SocketAddr, service: &str) -> bool {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = HealthClient::new(channel);
    let response = client
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    response.status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_service_reports_health_readiness_and_metrics() {
    let mesh = Mesh::start(MeshOptions::default()).await.unwrap();
    let stop = CancellationToken::new();
    let retrieval = retrieval::start(
        mesh_runtime::queue_service::QueueServiceConfig::ephemeral(
            &retrieval::SPEC,
            mesh.shared.clone(),
        )
        .unwrap(),
        stop.clone(),
    )
    .await
    .unwrap();
    let traces = trace_collector::start(
        mesh_runtime::queue_service::QueueServiceConfig::ephemeral(
            &trace_collector::SPEC,
            mesh.shared.clone(),
        )
        .unwrap(),
        stop.clone(),
    )
    .await
    .unwrap();

    let admins = [
        ("gateway", mesh.gateway.admin_addr),
        (
            "orchestrator",
            mesh.orchestrator.as_ref().unwrap().admin_addr,
        ),
        ("inference-router", mesh.router.admin_addr),
        ("agent-worker", mesh.worker.as_ref().unwrap().admin_addr),
        ("retrieval", retrieval.admin_addr),
        ("trace-collector", traces.admin_addr),
    ];
    for (name, addr) in admins {
        for path in ["/healthz", "/readyz", "/metrics"] {
            let response = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
            assert_eq!(response.status(), 200, "{name} {path}");
        }
    }
    let grpcs = [
        (mesh.gateway.grpc_addr, "agentmesh.v1.TaskService"),
        (
            mesh.orchestrator.as_ref().unwrap().grpc_addr,
            "agentmesh.v1.ControlPlane",
        ),
        (mesh.router.grpc_addr, "agentmesh.v1.InferenceService"),
        (
            mesh.worker.as_ref().unwrap().grpc_addr,
            "agentmesh.v1.AgentWorker",
        ),
        (retrieval.grpc_addr, "agentmesh.v1.Retrieval"),
        (traces.grpc_addr, "agentmesh.v1.TraceCollector"),
    ];
    for (addr, service) in grpcs {
        assert!(grpc_serving(addr, service).await, "{service}");
        assert!(grpc_serving(addr, "").await, "{service} server as a whole");
    }
    // The consumers KEDA reads exist under their contract names.
    for (stream, consumer) in [
        (StreamKind::Ingest, retrieval::CONSUMER),
        (StreamKind::Traces, trace_collector::CONSUMER),
        (StreamKind::Events, orchestrator::projection::CONSUMER),
    ] {
        let lag = mesh.bus.consumer_lag(stream, consumer).await.unwrap();
        assert_eq!(lag.total(), 0, "{consumer}");
    }
    let metrics = reqwest::get(format!("http://{}/metrics", retrieval.admin_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("queue_lag 0"), "{metrics}");

    // Stopping turns readiness off before the listeners close.
    stop.cancel();
    retrieval.stopped.wait().await.unwrap();
    traces.stopped.wait().await.unwrap();
}
