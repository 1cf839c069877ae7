//! The services of the mesh, started in-process against real NATS and a
//! real database, wired to each other on free ports.

use std::time::Duration;

use anyhow::Context as _;
use mesh_auth::Role;
use mesh_bus::BusConfig;
use mesh_runtime::SharedConfig;
use tokio_util::sync::CancellationToken;

use crate::infra::Nats;
use crate::{RestClient, TEST_JWT_SECRET};

/// The mesh key every in-process service of the tests signs and checks
/// service tokens with (a test value, not a secret).
pub const TEST_SERVICE_KEY: &str = "integration-test-service-key-0123456789abcdef";

/// The service-auth settings of the tests: [`TEST_SERVICE_KEY`].
pub fn test_service_auth() -> mesh_auth::service::ServiceAuthConfig {
    mesh_auth::service::ServiceAuthConfig::new(
        mesh_auth::service::ServiceKey::new(TEST_SERVICE_KEY).expect("test key is long enough"),
    )
}

/// The shared settings a test starts services with: the defaults, plus the
/// test mesh key.
pub fn test_shared_config() -> Result<SharedConfig, mesh_runtime::ConfigError> {
    let mut shared = SharedConfig::from_env(&Default::default())?;
    shared.service_auth = Some(test_service_auth());
    Ok(shared)
}

/// A service token signed with [`TEST_SERVICE_KEY`], for a test that calls
/// an internal face itself (put it in
/// [`mesh_runtime::service_auth::TOKEN_HEADER`]).
pub fn service_token() -> String {
    test_service_auth()
        .credential("integration-test")
        .token()
        .expect("sign a test service token")
}

pub struct MeshOptions {
    pub sim: model_sim::SimConfig,
    /// Overrides of the bus policies (ack wait, retries, backoff).
    pub bus: BusConfig,
    /// `None`: SQLite in a temporary directory.
    pub database_url: Option<String>,
    pub outbox_enabled: bool,
    /// Start an agent-worker in the test's runtime.
    pub start_worker: bool,
    pub worker_agents: agent_worker::AgentSelection,
    /// Point the router at this backend instead of the simulator.
    pub backend_url: Option<String>,
    /// Redis for the gateway's rate limits (`None`: limits off).
    pub redis_url: Option<String>,
    /// The gateway's per-tenant submit limit (0: off).
    pub submit_rate_per_minute: u32,
    /// Start the retrieval service (with all-MiniLM-L6-v2 when
    /// [`crate::retrieval::minilm_dir`] finds it) behind the gateway.
    pub retrieval: bool,
    /// Changes to the retrieval service's test configuration (limits).
    pub retrieval_config: Option<fn(&mut retrieval::Config)>,
    /// Changes to the in-process worker's configuration (tool limits,
    /// secrets).
    pub worker_config: Option<fn(&mut agent_worker::Config)>,
    /// Listener limits (header and body deadlines, sizes) of the router,
    /// orchestrator, trace-collector and gateway; `None`: their defaults.
    pub server_limits: Option<mesh_runtime::ServerLimits>,
    /// Mutual TLS on every internal gRPC hop (`AGENTMESH_TLS_*`); `None`:
    /// plain, as by default.
    pub tls: Option<mesh_runtime::tls::MeshTls>,
    /// Extra top-level sections of the router's route table (`cache:`,
    /// `tenants:`, `prices:`), which then routes every model to the mesh's
    /// backend through a routes file; `None`: the plain table, no file.
    pub router_table: Option<&'static str>,
}

impl Default for MeshOptions {
    fn default() -> Self {
        let mut bus = BusConfig::default();
        bus.task_retry.base = Duration::from_millis(100);
        bus.task_retry.max = Duration::from_millis(400);
        Self {
            sim: model_sim::SimConfig {
                listen: ([127, 0, 0, 1], 0).into(),
                ..Default::default()
            },
            bus,
            database_url: None,
            outbox_enabled: true,
            start_worker: true,
            worker_agents: agent_worker::AgentSelection::All,
            backend_url: None,
            redis_url: None,
            submit_rate_per_minute: 0,
            retrieval: false,
            retrieval_config: None,
            worker_config: None,
            server_limits: None,
            tls: None,
            router_table: None,
        }
    }
}

/// A mesh on a fresh PostgreSQL database (what most integration tests
/// run on); panics, as a test helper, when it cannot start.
pub async fn postgres_mesh(options: MeshOptions) -> Mesh {
    let url = crate::infra::fresh_postgres()
        .await
        .expect("fresh postgres database");
    Mesh::start(MeshOptions {
        database_url: Some(url),
        ..options
    })
    .await
    .expect("mesh starts")
}

/// One running mesh. Dropping it stops every service.
pub struct Mesh {
    pub nats: Nats,
    pub shared: SharedConfig,
    pub data_dir: tempfile::TempDir,
    pub sim_url: String,
    pub router: inference_router::Running,
    pub router_stop: CancellationToken,
    pub orchestrator: Option<orchestrator::Running>,
    pub orchestrator_stop: CancellationToken,
    pub orchestrator_config: orchestrator::Config,
    pub worker_stop: CancellationToken,
    /// The in-process worker, when `start_worker` was set.
    pub worker: Option<agent_worker::Running>,
    pub traces: trace_collector::Running,
    pub traces_stop: CancellationToken,
    pub gateway: gateway::Running,
    pub gateway_stop: CancellationToken,
    /// The retrieval service, when `MeshOptions::retrieval` was set.
    pub retrieval: Option<retrieval::Running>,
    pub retrieval_stop: CancellationToken,
    pub retrieval_config: Option<retrieval::Config>,
    sim_stop: CancellationToken,
    pub bus: mesh_bus::Bus,
}

impl Mesh {
    pub async fn start(options: MeshOptions) -> anyhow::Result<Self> {
        let nats = Nats::start()?;
        let data_dir = tempfile::tempdir()?;
        let mut shared = test_shared_config()?;
        shared.nats_url = nats.url.clone();
        shared.database_url = options.database_url.clone();
        shared.redis_url = options.redis_url.clone();
        shared.bus = options.bus.clone();
        shared.tls = options.tls.clone();

        let sim_stop = CancellationToken::new();
        let sim_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let sim_url = format!("http://{}", sim_listener.local_addr()?);
        {
            let stop = sim_stop.clone();
            let config = options.sim.clone();
            tokio::spawn(async move {
                if let Err(error) = model_sim::serve(sim_listener, config, stop).await {
                    tracing::error!(%error, "simulator failed");
                }
            });
        }

        let router_stop = CancellationToken::new();
        let backend = options
            .backend_url
            .clone()
            .unwrap_or_else(|| sim_url.clone());
        let mut router_config = inference_router::Config::ephemeral(shared.clone(), &backend)?;
        if let Some(sections) = options.router_table {
            let routes = data_dir.path().join("routes.yaml");
            std::fs::write(
                &routes,
                format!(
                    "pools:\n  mesh: {{backends: [{{url: \"{backend}\"}}]}}\nroutes:\n  \"*\": {{pool: mesh}}\n{sections}\n"
                ),
            )?;
            router_config.routes_file = Some(routes);
        }
        if let Some(limits) = &options.server_limits {
            router_config.server = limits.clone();
        }
        let router = inference_router::start(router_config, router_stop.clone())
            .await
            .context("start inference-router")?;

        let mut orchestrator_config =
            orchestrator::Config::ephemeral(shared.clone(), data_dir.path().to_owned())?;
        orchestrator_config.outbox.enabled = options.outbox_enabled;
        if let Some(limits) = &options.server_limits {
            orchestrator_config.server = limits.clone();
        }
        let orchestrator_stop = CancellationToken::new();
        let orch = orchestrator::start(orchestrator_config.clone(), orchestrator_stop.clone())
            .await
            .context("start orchestrator")?;
        let orchestrator_url = format!("http://{}", orch.grpc_addr);
        // Restarts bind the same address, so the gateway's channel finds it.
        orchestrator_config.grpc_listen = orch.grpc_addr;

        let retrieval_stop = CancellationToken::new();
        let (retrieval, retrieval_config) = if options.retrieval {
            let mut config =
                retrieval::Config::ephemeral(shared.clone(), data_dir.path().to_owned())?;
            config.minilm_dir = crate::retrieval::minilm_dir();
            config.embeddings_url = Some(format!("http://{}", router.http_addr));
            if let Some(tweak) = options.retrieval_config {
                tweak(&mut config);
            }
            let running = retrieval::start(config.clone(), retrieval_stop.clone())
                .await
                .context("start retrieval")?;
            // Restarts bind the same address, so the gateway's channel finds it.
            config.grpc_listen = running.grpc_addr;
            (Some(running), Some(config))
        } else {
            (None, None)
        };

        let worker_stop = CancellationToken::new();
        let mut worker = None;
        if options.start_worker {
            let mut config = agent_worker::Config::ephemeral(
                shared.clone(),
                format!("http://{}", router.grpc_addr),
            )?;
            config.agents = options.worker_agents.clone();
            config.discovery_interval = Duration::from_millis(100);
            if let Some(retrieval) = &retrieval_config {
                config.retrieval_url = format!("http://{}", retrieval.grpc_listen);
            }
            config.orchestrator_url = orchestrator_url.clone();
            if let Some(tweak) = options.worker_config {
                tweak(&mut config);
            }
            worker = Some(
                agent_worker::start(config, worker_stop.clone())
                    .await
                    .context("start agent-worker")?,
            );
        }

        let traces_stop = CancellationToken::new();
        let mut traces_config =
            trace_collector::Config::ephemeral(shared.clone(), data_dir.path().to_owned())?;
        if let Some(limits) = &options.server_limits {
            traces_config.server = limits.clone();
        }
        let traces = trace_collector::start(traces_config, traces_stop.clone())
            .await
            .context("start trace-collector")?;

        let gateway_stop = CancellationToken::new();
        let mut gateway_config =
            gateway::Config::ephemeral(shared.clone(), orchestrator_url, TEST_JWT_SECRET)?;
        gateway_config.submit_rate_per_minute = options.submit_rate_per_minute;
        if let Some(limits) = &options.server_limits {
            gateway_config.server = limits.clone();
        }
        gateway_config.router_url = format!("http://{}", router.http_addr);
        gateway_config.traces_url = format!("http://{}", traces.http_addr);
        gateway_config.traces_grpc_url = format!("http://{}", traces.grpc_addr);
        if let Some(config) = &retrieval_config {
            gateway_config.retrieval_url = format!("http://{}", config.grpc_listen);
        }
        let gateway = gateway::start(gateway_config, gateway_stop.clone())
            .await
            .context("start gateway")?;
        let bus = mesh_bus::Bus::connect(&nats.url, "test", shared.bus.clone()).await?;

        Ok(Self {
            nats,
            shared,
            data_dir,
            sim_url,
            router,
            router_stop,
            orchestrator: Some(orch),
            orchestrator_stop,
            orchestrator_config,
            worker_stop,
            worker,
            traces,
            traces_stop,
            gateway,
            gateway_stop,
            retrieval,
            retrieval_stop,
            retrieval_config,
            sim_stop,
            bus,
        })
    }

    pub fn router_grpc_url(&self) -> String {
        format!("http://{}", self.router.grpc_addr)
    }

    pub fn gateway_grpc_url(&self) -> String {
        format!("http://{}", self.gateway.grpc_addr)
    }

    pub fn token(&self, tenant: &str, roles: &[Role]) -> String {
        mesh_auth::issue_hs256(TEST_JWT_SECRET.as_bytes(), tenant, "test", roles, 3600)
            .expect("sign test token")
    }

    /// A REST client acting as `tenant` with the operator role.
    pub fn client(&self, tenant: &str) -> RestClient {
        RestClient::new(
            format!("http://{}", self.gateway.http_addr),
            self.token(tenant, &[Role::Operator]),
        )
    }

    /// Stops the orchestrator and waits until it has shut down.
    pub async fn stop_orchestrator(&mut self) -> anyhow::Result<()> {
        self.orchestrator_stop.cancel();
        if let Some(running) = self.orchestrator.take() {
            running.stopped.wait().await?;
        }
        Ok(())
    }

    /// Starts the orchestrator again on the same database and port.
    pub async fn restart_orchestrator(&mut self, outbox_enabled: bool) -> anyhow::Result<()> {
        let mut config = self.orchestrator_config.clone();
        config.outbox.enabled = outbox_enabled;
        self.orchestrator_stop = CancellationToken::new();
        self.orchestrator =
            Some(orchestrator::start(config, self.orchestrator_stop.clone()).await?);
        Ok(())
    }

    /// Stops the retrieval service and waits until it has shut down.
    pub async fn stop_retrieval(&mut self) -> anyhow::Result<()> {
        self.retrieval_stop.cancel();
        if let Some(running) = self.retrieval.take() {
            running.stopped.wait().await?;
        }
        Ok(())
    }

    /// Starts the retrieval service again on the same database, data
    /// directory and port.
    pub async fn restart_retrieval(&mut self) -> anyhow::Result<()> {
        let config = self
            .retrieval_config
            .clone()
            .context("the mesh was started without retrieval")?;
        self.retrieval_stop = CancellationToken::new();
        self.retrieval = Some(retrieval::start(config, self.retrieval_stop.clone()).await?);
        Ok(())
    }

    pub fn worker_config(&self) -> anyhow::Result<agent_worker::Config> {
        let mut config =
            agent_worker::Config::ephemeral(self.shared.clone(), self.router_grpc_url())?;
        config.discovery_interval = Duration::from_millis(100);
        config.orchestrator_url = format!("http://{}", self.orchestrator_config.grpc_listen);
        if let Some(retrieval) = &self.retrieval_config {
            config.retrieval_url = format!("http://{}", retrieval.grpc_listen);
        }
        Ok(config)
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        for token in [
            &self.gateway_stop,
            &self.retrieval_stop,
            &self.traces_stop,
            &self.worker_stop,
            &self.orchestrator_stop,
            &self.router_stop,
            &self.sim_stop,
        ] {
            token.cancel();
        }
    }
}

/// An agent-worker on its own runtime and thread, so a test can stop it
/// gracefully (drain) or kill it the hard way: the runtime is dropped
/// mid-task, nothing is acked, its NATS connection just goes away.
pub struct IsolatedWorker {
    command: Option<std::sync::mpsc::Sender<Exit>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

enum Exit {
    Kill,
    Drain,
}

impl IsolatedWorker {
    pub fn spawn(config: agent_worker::Config) -> anyhow::Result<Self> {
        let (command_tx, command_rx) = std::sync::mpsc::channel::<Exit>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let thread = std::thread::spawn(move || {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    return;
                }
            };
            let token = CancellationToken::new();
            let started = runtime.block_on(agent_worker::start(config, token.clone()));
            let running = match started {
                Ok(running) => {
                    let _ = ready_tx.send(Ok(()));
                    running
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    return;
                }
            };
            // Park this thread until told; the runtime's workers keep running.
            if let Ok(Exit::Drain) | Err(_) = command_rx.recv() {
                token.cancel();
                let _ = runtime.block_on(running.stopped.wait());
            }
            runtime.shutdown_background();
        });
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Self {
                command: Some(command_tx),
                thread: Some(thread),
            }),
            Ok(Err(e)) => anyhow::bail!("worker did not start: {e}"),
            Err(_) => anyhow::bail!("worker thread died"),
        }
    }

    /// Drops the worker's runtime without any shutdown phase.
    pub fn kill(mut self) {
        self.exit(Exit::Kill);
    }

    /// Graceful stop: stop pulling, finish in-flight tasks, then exit.
    pub fn drain(mut self) {
        self.exit(Exit::Drain);
    }

    fn exit(&mut self, how: Exit) {
        if let Some(command) = self.command.take() {
            let _ = command.send(how);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for IsolatedWorker {
    fn drop(&mut self) {
        self.exit(Exit::Kill);
    }
}

/// Worker replicas the local scaler resizes: each an [`IsolatedWorker`].
pub struct WorkerReplicas {
    config: agent_worker::Config,
    workers: Vec<IsolatedWorker>,
}

impl WorkerReplicas {
    pub fn new(config: agent_worker::Config) -> Self {
        Self {
            config,
            workers: Vec::new(),
        }
    }
}

impl mesh_scaling::Replicas for WorkerReplicas {
    fn current(&self) -> u32 {
        u32::try_from(self.workers.len()).unwrap_or(u32::MAX)
    }

    async fn scale_to(&mut self, n: u32) -> Result<(), String> {
        let n = n as usize;
        while self.workers.len() < n {
            let config = self.config.clone();
            let worker = tokio::task::spawn_blocking(move || IsolatedWorker::spawn(config))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            self.workers.push(worker);
        }
        while self.workers.len() > n {
            if let Some(worker) = self.workers.pop() {
                tokio::task::spawn_blocking(move || worker.drain())
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    }
}
