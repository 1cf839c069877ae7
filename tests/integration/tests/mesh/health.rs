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
        retrieval::Config::ephemeral(mesh.shared.clone(), mesh.data_dir.path().to_owned()).unwrap(),
        stop.clone(),
    )
    .await
    .unwrap();
    let traces = trace_collector::start(
        trace_collector::Config::ephemeral(mesh.shared.clone(), mesh.data_dir.path().to_owned())
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

async fn ready(addr: std::net::SocketAddr) -> u16 {
    reqwest::get(format!("http://{addr}/readyz"))
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

async fn wait_ready(addr: std::net::SocketAddr, want: u16) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while ready(addr).await != want {
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz never became {want}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readiness_follows_the_bus_connection_and_work_resumes() {
    let mut mesh = Mesh::start(MeshOptions::default()).await.unwrap();
    let admins = [
        mesh.gateway.admin_addr,
        mesh.orchestrator.as_ref().unwrap().admin_addr,
        mesh.worker.as_ref().unwrap().admin_addr,
    ];
    for addr in admins {
        assert_eq!(ready(addr).await, 200);
    }
    mesh.nats.kill();
    for addr in admins {
        wait_ready(addr, 503).await;
        // Alive all the same: not a reason to restart the process.
        let live = reqwest::get(format!("http://{addr}/healthz"))
            .await
            .unwrap();
        assert_eq!(live.status(), 200);
    }
    mesh.nats.restart().unwrap();
    for addr in admins {
        wait_ready(addr, 200).await;
    }
    let client = mesh.client("acme");
    client.apply_sim_agent("support", 2).await.unwrap();
    let id = client.submit("support", "after the outage").await.unwrap();
    client
        .wait_for(&id, &["succeeded"], std::time::Duration::from_secs(30))
        .await
        .unwrap();
}
