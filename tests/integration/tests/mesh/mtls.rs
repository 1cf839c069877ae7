#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is the failure report

//! Mutual TLS on the internal gRPC hops (`AGENTMESH_TLS_*`): a CA and
//! certificates made at test time with the `openssl` CLI, the mesh started
//! with mTLS on, a task run end to end through the gateway (gateway ->
//! orchestrator, worker -> router, gateway -> trace-collector and
//! retrieval, all over mTLS), and every internal port refusing a plain client, a TLS client
//! without a certificate, and one whose certificate another CA signed,
//! while a client with a mesh certificate is served. Rotation: new files
//! are picked up by new connections without a restart.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mesh_integration::mesh::service_token;
use mesh_integration::{Mesh, MeshOptions};
use mesh_runtime::service_auth::TOKEN_HEADER;
use mesh_runtime::tls::{CA_FILE_VAR, CERT_FILE_VAR, KEY_FILE_VAR, MeshTls, RELOAD_INTERVAL_VAR};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_check_response::ServingStatus;
use trace_collector::opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use trace_collector::opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;

const WAIT: Duration = Duration::from_secs(30);

/// Runs `openssl` with `args` in `dir`; fails the test on an error.
fn openssl(dir: &Path, args: &[&str]) {
    let output = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl (the Debian package `openssl`)");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A CA (P-256) in `dir` as `<name>.pem` and `<name>.key`.
fn make_ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
}

/// A certificate for `127.0.0.1` and `localhost`, usable as server and
/// client, signed by the CA `ca`: `<name>.pem` and `<name>.key`.
fn make_leaf(dir: &Path, ca: &str, name: &str) {
    std::fs::write(
        dir.join(format!("{name}.ext")),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n\
         extendedKeyUsage=serverAuth,clientAuth\n\
         basicConstraints=critical,CA:FALSE\n\
         keyUsage=critical,digitalSignature\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={name}"),
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-set_serial",
            &serial(),
            "-days",
            "2",
            "-out",
            &format!("{name}.pem"),
            "-extfile",
            &format!("{name}.ext"),
        ],
    );
}

/// A fresh serial number per certificate.
fn serial() -> String {
    u64::from_le_bytes(uuid::Uuid::new_v4().as_bytes()[..8].try_into().unwrap()).to_string()
}

/// The settings of a process whose certificate is `leaf` and which trusts
/// the CA file `ca`, re-reading its files on every handshake.
fn tls_settings(dir: &Path, leaf: &str, ca: &str) -> MeshTls {
    let path = |file: String| dir.join(file).to_str().unwrap().to_owned();
    let env = [
        (CERT_FILE_VAR, path(format!("{leaf}.pem"))),
        (KEY_FILE_VAR, path(format!("{leaf}.key"))),
        (CA_FILE_VAR, path(format!("{ca}.pem"))),
        (RELOAD_INTERVAL_VAR, "0".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    MeshTls::from_env(&env).unwrap().expect("tls configured")
}

/// The test PKI: the mesh CA with the mesh's certificate (`mesh.*`, what
/// the services use, under names the rotation test overwrites), a second
/// certificate of the mesh CA (`peer`), and a rogue CA with a certificate
/// of its own (`rogue`).
fn pki() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    make_ca(dir.path(), "mesh-ca");
    make_leaf(dir.path(), "mesh-ca", "mesh");
    make_leaf(dir.path(), "mesh-ca", "peer");
    make_ca(dir.path(), "rogue-ca");
    make_leaf(dir.path(), "rogue-ca", "rogue");
    dir
}

fn certs(path: PathBuf) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// A rustls client that trusts the CA file `ca` and presents `leaf`, or no
/// certificate at all.
fn client_config(dir: &Path, ca: &str, leaf: Option<&str>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs(dir.join(format!("{ca}.pem"))) {
        roots.add(cert).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let mut config = match leaf {
        Some(leaf) => builder
            .with_client_auth_cert(
                certs(dir.join(format!("{leaf}.pem"))),
                PrivateKeyDer::from_pem_file(dir.join(format!("{leaf}.key"))).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

/// A channel to `addr` over TLS with `config` (not through
/// `mesh_runtime::tls`, so the server is checked against any client).
async fn tls_channel(
    addr: std::net::SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> Result<Channel, tonic::transport::Error> {
    let connector = tower::service_fn(move |_: tonic::codegen::http::Uri| {
        let config = config.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            let stream = tokio_rustls::TlsConnector::from(config)
                .connect(ServerName::IpAddress(addr.ip().into()), tcp)
                .await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
        }
    });
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect_with_connector(connector)
        .await
}

/// gRPC health over `channel`: its status, or why the call failed. Health
/// needs no service token, so a refusal here is the transport's.
async fn health(channel: Result<Channel, tonic::transport::Error>) -> Result<i32, String> {
    let channel = channel.map_err(|e| format!("connect: {e}"))?;
    let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
    let answer = tokio::time::timeout(
        Duration::from_secs(10),
        client.check(tonic_health::pb::HealthCheckRequest::default()),
    )
    .await
    .map_err(|_| "timed out".to_owned())?
    .map_err(|status| format!("{status:?}"))?;
    Ok(answer.into_inner().status)
}

/// The internal gRPC ports of `mesh`, by service.
fn internal_ports(mesh: &Mesh) -> Vec<(&'static str, std::net::SocketAddr)> {
    vec![
        (
            "orchestrator",
            mesh.orchestrator.as_ref().unwrap().grpc_addr,
        ),
        ("inference-router", mesh.router.grpc_addr),
        ("trace-collector", mesh.traces.grpc_addr),
        ("agent-worker", mesh.worker.as_ref().unwrap().grpc_addr),
        ("retrieval", mesh.retrieval.as_ref().unwrap().grpc_addr),
    ]
}

/// Submits a task through the gateway and waits for it to succeed.
async fn run_task(mesh: &Mesh, input: &str) {
    let client = mesh.client("acme");
    let id = client.submit("support", input).await.unwrap();
    let task = client
        .wait_for(&id, &["succeeded", "failed"], WAIT)
        .await
        .unwrap();
    assert_eq!(task["status"], "succeeded", "{task}");
    assert!(
        !task["output"].as_str().unwrap_or_default().is_empty(),
        "the model's answer came back: {task}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tasks_run_over_mtls_and_internal_ports_refuse_clients_without_a_mesh_certificate() {
    let pki = pki();
    let dir = pki.path();
    let mesh = Mesh::start(MeshOptions {
        tls: Some(tls_settings(dir, "mesh", "mesh-ca")),
        retrieval: true,
        ..Default::default()
    })
    .await
    .unwrap();

    // gateway -> orchestrator (apply, submit, read), worker -> router.
    mesh.client("acme")
        .apply_sim_agent("support", 8)
        .await
        .unwrap();
    run_task(&mesh, "hello over mutual tls").await;

    // gateway -> trace-collector (TraceQuery over gRPC): the gateway's own
    // public gRPC port stays plain for users.
    let mut traces = mesh_proto::trace_query_client::TraceQueryClient::new(
        Endpoint::from_shared(mesh.gateway_grpc_url())
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    let mut request = tonic::Request::new(mesh_proto::ListTracesRequest::default());
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", mesh.token("acme", &[mesh_auth::Role::Viewer]))
            .parse()
            .unwrap(),
    );
    traces
        .list_traces(request)
        .await
        .expect("the gateway reaches the collector over mtls");
    // The services' OTLP exporter channel (mesh TLS) reaches the
    // collector's OTLP/gRPC receiver.
    let mut shared = mesh.shared.clone();
    shared.otlp_endpoint = Some(format!("http://{}", mesh.traces.grpc_addr));
    let channel = mesh_runtime::tls::otlp_channel(&shared)
        .unwrap()
        .expect("tls is on");
    let mut otlp = TraceServiceClient::new(channel);
    let mut request = tonic::Request::new(ExportTraceServiceRequest::default());
    request
        .metadata_mut()
        .insert(TOKEN_HEADER, service_token().parse().unwrap());
    otlp.export(request)
        .await
        .expect("the otlp exporter's channel reaches the collector over mtls");
    // gateway -> retrieval.
    let collections = mesh
        .client("acme")
        .get("/v1/collections")
        .send()
        .await
        .unwrap();
    assert_eq!(
        collections.status(),
        reqwest::StatusCode::OK,
        "the gateway reaches retrieval over mtls: {:?}",
        collections.text().await
    );

    let serving = ServingStatus::Serving as i32;
    for (service, addr) in internal_ports(&mesh) {
        // A certificate of the mesh CA (not the services' own) is served.
        let ok = health(tls_channel(addr, client_config(dir, "mesh-ca", Some("peer"))).await).await;
        assert_eq!(ok, Ok(serving), "{service}: a mesh client is served");

        let plain = health(
            Endpoint::from_shared(format!("http://{addr}"))
                .unwrap()
                .connect_timeout(Duration::from_secs(5))
                .connect()
                .await,
        )
        .await;
        let no_cert = health(tls_channel(addr, client_config(dir, "mesh-ca", None)).await).await;
        let rogue =
            health(tls_channel(addr, client_config(dir, "mesh-ca", Some("rogue"))).await).await;
        for (why, outcome) in [
            ("plain text", plain),
            ("no client certificate", no_cert),
            ("a certificate of another CA", rogue),
        ] {
            assert!(
                outcome.is_err(),
                "{service}: a client with {why} was served: {outcome:?}"
            );
        }

        // And the services check the server too: a client that trusts only
        // the rogue CA does not accept the mesh's certificate.
        let wrong_trust =
            health(tls_channel(addr, client_config(dir, "rogue-ca", Some("rogue"))).await).await;
        assert!(wrong_trust.is_err(), "{service}: {wrong_trust:?}");
    }
}

/// Replaces `to` with `from` in one rename, as a Kubernetes Secret update
/// does (never a half-written file).
fn replace(dir: &Path, from: &str, to: &str) {
    let staged = dir.join(format!("{to}.staged"));
    std::fs::copy(dir.join(from), &staged).unwrap();
    std::fs::rename(staged, dir.join(to)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotated_certificates_are_used_without_a_restart() {
    let pki = pki();
    let dir = pki.path();
    let mesh = Mesh::start(MeshOptions {
        tls: Some(tls_settings(dir, "mesh", "mesh-ca")),
        ..Default::default()
    })
    .await
    .unwrap();
    mesh.client("acme")
        .apply_sim_agent("support", 8)
        .await
        .unwrap();
    run_task(&mesh, "before the rotation").await;
    let orchestrator = mesh.orchestrator.as_ref().unwrap().grpc_addr;
    let serving = ServingStatus::Serving as i32;

    // A new CA: the mesh's certificate and trust move to it, files
    // swapped in place while the services run.
    make_ca(dir, "next-ca");
    make_leaf(dir, "next-ca", "next");
    make_leaf(dir, "next-ca", "next-peer");
    replace(dir, "next-ca.pem", "mesh-ca.pem");
    replace(dir, "next.pem", "mesh.pem");
    replace(dir, "next.key", "mesh.key");

    // New connections: a client of the new CA is served, one of the old CA
    // is refused (the old CA is no longer trusted), and a client that
    // trusts only the new CA accepts the server's new certificate.
    let next = health(
        tls_channel(
            orchestrator,
            client_config(dir, "next-ca", Some("next-peer")),
        )
        .await,
    )
    .await;
    assert_eq!(next, Ok(serving), "the rotated certificate and CA are used");
    let old =
        health(tls_channel(orchestrator, client_config(dir, "next-ca", Some("peer"))).await).await;
    assert!(
        old.is_err(),
        "a certificate of the old CA was served: {old:?}"
    );

    // The mesh keeps working: connections made before the rotation keep
    // their session, new ones use the new files.
    run_task(&mesh, "after the rotation").await;
}
