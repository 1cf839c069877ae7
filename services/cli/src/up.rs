//! `agentmesh up`: the whole mesh on one machine. Starts (or finds) NATS
//! JetStream and the model server as child processes, runs the six
//! services in this process on SQLite under the data directory, applies the
//! example agent, runs a sample task with its answer streamed to the
//! terminal, prints the endpoints, and on Ctrl-C stops everything it
//! started, in reverse order.
//!
//! Every service reads its usual environment variables, so ports and limits
//! are overridden the same way as in a deployment.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use crate::api::Api;
use crate::output::Format;

#[derive(clap::Args)]
pub struct UpArgs {
    /// nats-server (2.10+) to start; ignored when NATS_URL is set.
    #[arg(long, env = "AGENTMESH_NATS_SERVER")]
    nats_server: Option<PathBuf>,
    /// Use this OpenAI-compatible model server instead of starting one.
    #[arg(long, env = "AGENTMESH_ROUTER_BACKEND_URL")]
    backend_url: Option<String>,
    /// GGUF model for the local llama.cpp server (see scripts/ensure-local-model.sh).
    #[arg(long, env = "AGENTMESH_MODEL_GGUF")]
    model_gguf: Option<PathBuf>,
    /// Python with llama-cpp-python[server] installed.
    #[arg(long, default_value = ".venv/bin/python")]
    python: PathBuf,
    /// Use the built-in model simulator (not a real model: canned words).
    #[arg(long, conflicts_with_all = ["backend_url", "model_gguf"])]
    simulator: bool,
    /// The sample task's input.
    #[arg(long, default_value = "In one sentence, what does a message queue do?")]
    prompt: String,
    /// Skip the example agent and sample task.
    #[arg(long)]
    no_demo: bool,
}

/// A phase of start-up or shutdown: a spinner on a terminal, a line otherwise.
fn step(message: &str) {
    crate::progress::phase(message);
}

/// A child process that is stopped (SIGTERM, then SIGKILL) when dropped
/// or stopped.
struct Managed {
    name: &'static str,
    child: Child,
}

impl Managed {
    async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status()
                .await;
            if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
                .await
                .is_ok()
            {
                step(&format!("stopped {}", self.name));
                return;
            }
        }
        let _ = self.child.kill().await;
        step(&format!("killed {}", self.name));
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn log_file(data_dir: &Path, name: &str) -> anyhow::Result<std::fs::File> {
    let path = data_dir.join(format!("{name}.log"));
    std::fs::File::create(&path).with_context(|| format!("create {}", path.display()))
}

async fn wait_tcp(port: u16, what: &str, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        if Instant::now() > deadline {
            bail!("{what} did not listen on port {port} within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

async fn start_nats(binary: &Path, data_dir: &Path) -> anyhow::Result<(Managed, String)> {
    let port = free_port()?;
    let store = data_dir.join("nats");
    std::fs::create_dir_all(&store)?;
    step(&format!(
        "starting nats-server (JetStream) on 127.0.0.1:{port}"
    ));
    let child = Command::new(binary)
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(&store)
        .stdout(Stdio::null())
        .stderr(log_file(data_dir, "nats")?)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("start {}", binary.display()))?;
    let managed = Managed {
        name: "nats-server",
        child,
    };
    wait_tcp(port, "nats-server", Duration::from_secs(15)).await?;
    Ok((managed, format!("nats://127.0.0.1:{port}")))
}

async fn start_llama(
    python: &Path,
    gguf: &Path,
    data_dir: &Path,
) -> anyhow::Result<(Managed, String)> {
    let port = free_port()?;
    step(&format!(
        "starting the local model server (llama.cpp, {}) on 127.0.0.1:{port}",
        gguf.display()
    ));
    let child = Command::new(python)
        .args(["-m", "llama_cpp.server", "--model"])
        .arg(gguf)
        .args([
            "--model_alias",
            "smollm2",
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--n_ctx",
            "2048",
            "--n_threads",
            "2",
            "--chat_format",
            "chatml-function-calling",
        ])
        .stdout(Stdio::null())
        .stderr(log_file(data_dir, "model-server")?)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("start {} -m llama_cpp.server", python.display()))?;
    Ok((
        Managed {
            name: "model server",
            child,
        },
        format!("http://127.0.0.1:{port}"),
    ))
}

/// Waits until the backend lists its models.
async fn wait_backend(url: &str, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let client = reqwest::Client::new();
    loop {
        if let Ok(r) = client.get(format!("{url}/v1/models")).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the model server at {url} did not answer within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The HS256 secret of this data directory, created once.
fn jwt_secret(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join("jwt-secret");
    if let Ok(secret) = std::fs::read_to_string(&path) {
        return Ok(secret.trim().to_owned());
    }
    let bytes: [u8; 48] = rand::random();
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    write_private(&path, &secret)?;
    Ok(secret)
}

/// The mesh key of this data directory (service tokens of the internal
/// calls), created once; returns its file.
fn service_key_file(data_dir: &Path) -> anyhow::Result<PathBuf> {
    let path = data_dir.join("service-key");
    if !path.exists() {
        let bytes: [u8; 48] = rand::random();
        let key = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        write_private(&path, &key)?;
    }
    Ok(path)
}

fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("write {}", path.display()))?;
    file.write_all(contents.as_bytes())?;
    Ok(())
}

pub async fn run(args: UpArgs, data_dir: &Path, format: Format) -> anyhow::Result<()> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("create data directory {}", data_dir.display()))?;
    let data_dir = data_dir.canonicalize()?;
    let mut env: HashMap<String, String> = mesh_runtime::env::process_env();
    let telemetry = mesh_telemetry::init(
        "agentmesh",
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT").map(String::as_str),
        false,
        "warn",
    )?;
    let mut children: Vec<Managed> = Vec::new();
    let result = run_inner(args, &data_dir, format, &mut env, &mut children).await;
    // Stop the processes we started, newest first.
    while let Some(child) = children.pop() {
        child.stop().await;
    }
    crate::progress::done();
    telemetry.shutdown();
    result
}

async fn run_inner(
    args: UpArgs,
    data_dir: &Path,
    format: Format,
    env: &mut HashMap<String, String>,
    children: &mut Vec<Managed>,
) -> anyhow::Result<()> {
    env.insert("AGENTMESH_DATA_DIR".into(), data_dir.display().to_string());

    if !env.contains_key("NATS_URL") {
        let binary = args
            .nats_server
            .clone()
            .unwrap_or_else(|| PathBuf::from(".venv/bin/nats-server"));
        if !binary.exists() {
            bail!(
                "no nats-server at {}: run scripts/up (it installs one), pass --nats-server, or set NATS_URL",
                binary.display()
            );
        }
        let (nats, url) = start_nats(&binary, data_dir).await?;
        children.push(nats);
        env.insert("NATS_URL".into(), url);
    }

    let (backend, model_note) = if let Some(url) = args.backend_url.clone() {
        (url, "your model server")
    } else if let Some(gguf) = args.model_gguf.clone() {
        let (server, url) = start_llama(&args.python, &gguf, data_dir).await?;
        children.push(server);
        (url, "SmolLM2-135M-Instruct on llama.cpp")
    } else if args.simulator {
        (
            String::new(),
            "the model simulator (canned words, not a real model)",
        )
    } else {
        bail!("no model: pass --model-gguf (scripts/up does), --backend-url, or --simulator");
    };

    let shutdown = CancellationToken::new();
    let backend = if args.simulator {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let config = model_sim::SimConfig {
            model: "smollm2".into(),
            inter_token: Duration::from_millis(20),
            default_max_tokens: 32,
            ..Default::default()
        };
        let stop = shutdown.clone();
        tokio::spawn(async move { model_sim::serve(listener, config, stop).await });
        url
    } else {
        backend
    };
    step(&format!("waiting for the model server at {backend}"));
    wait_backend(&backend, Duration::from_secs(180)).await?;
    env.insert("AGENTMESH_ROUTER_BACKEND_URL".into(), backend.clone());

    let secret = match env.get("AGENTMESH_GATEWAY_JWT_SECRET") {
        Some(secret) => secret.clone(),
        None => jwt_secret(data_dir)?,
    };
    env.insert("AGENTMESH_GATEWAY_JWT_SECRET".into(), secret.clone());
    // Internal calls carry service tokens signed with one mesh key: the
    // operator's when set, else this data directory's.
    if !env.contains_key(mesh_auth::service::KEY_VAR)
        && !env.contains_key(mesh_auth::service::KEY_FILE_VAR)
    {
        let path = service_key_file(data_dir)?;
        env.insert(
            mesh_auth::service::KEY_FILE_VAR.into(),
            path.display().to_string(),
        );
    }

    step("starting the services (SQLite under the data directory)");
    let router =
        inference_router::start(inference_router::Config::from_env(env)?, shutdown.clone())
            .await
            .context("inference-router")?;
    let orchestrator = orchestrator::start(orchestrator::Config::from_env(env)?, shutdown.clone())
        .await
        .context("orchestrator")?;
    env.entry("AGENTMESH_WORKER_ROUTER_URL".into())
        .or_insert_with(|| format!("http://{}", router.grpc_addr));
    env.entry("AGENTMESH_GATEWAY_ORCHESTRATOR_URL".into())
        .or_insert_with(|| format!("http://{}", orchestrator.grpc_addr));
    env.entry("AGENTMESH_GATEWAY_ROUTER_URL".into())
        .or_insert_with(|| format!("http://{}", router.http_addr));
    env.entry("AGENTMESH_RETRIEVAL_EMBEDDINGS_URL".into())
        .or_insert_with(|| format!("http://{}", router.http_addr));
    let retrieval = retrieval::start(retrieval::config_from_env(env)?, shutdown.clone())
        .await
        .context("retrieval")?;
    env.entry("AGENTMESH_GATEWAY_RETRIEVAL_URL".into())
        .or_insert_with(|| format!("http://{}", retrieval.grpc_addr));
    // The worker's tools reach these: `agent` tools submit sub-tasks to the
    // orchestrator, `retrieval` tools search through the retrieval service.
    env.entry("AGENTMESH_WORKER_ORCHESTRATOR_URL".into())
        .or_insert_with(|| format!("http://{}", orchestrator.grpc_addr));
    env.entry("AGENTMESH_WORKER_RETRIEVAL_URL".into())
        .or_insert_with(|| format!("http://{}", retrieval.grpc_addr));
    let worker = agent_worker::start(agent_worker::Config::from_env(env)?, shutdown.clone())
        .await
        .context("agent-worker")?;
    let traces = trace_collector::start(trace_collector::config_from_env(env)?, shutdown.clone())
        .await
        .context("trace-collector")?;
    env.entry("AGENTMESH_GATEWAY_TRACES_URL".into())
        .or_insert_with(|| format!("http://{}", traces.http_addr));
    env.entry("AGENTMESH_GATEWAY_TRACES_GRPC_URL".into())
        .or_insert_with(|| format!("http://{}", traces.grpc_addr));
    let gateway = gateway::start(gateway::Config::from_env(env)?, shutdown.clone())
        .await
        .context("gateway")?;

    let token = mesh_auth::issue_hs256(
        secret.as_bytes(),
        "dev",
        "agentmesh-up",
        &[mesh_auth::Role::Admin],
        7 * 24 * 3600,
    )?;
    write_private(&data_dir.join("dev-token"), &token)?;
    let base = format!("http://{}", gateway.http_addr);

    if !args.no_demo {
        let api = Api::new(&base, token.clone());
        let example = crate::manifest::parse(include_str!("../agents/assistant.yaml"))?;
        let agent = &example[0].1;
        api.apply_agent(&agent.metadata.name, &agent.spec).await?;
        step(&format!(
            "applied agent/{} (model {})",
            agent.metadata.name, agent.spec["model"]
        ));
        step(&format!("sample task: {:?}", args.prompt));
        let started = Instant::now();
        let task = api.submit(&agent.metadata.name, &args.prompt, None).await?;
        let id = task["id"].as_str().unwrap_or_default().to_owned();
        crate::progress::done();
        eprintln!();
        let last = api.follow(&id, format).await?;
        eprintln!();
        step(&format!(
            "task {id} {} in {:.1}s ({} tokens) by {model_note}",
            last["type"].as_str().unwrap_or("ended"),
            started.elapsed().as_secs_f64(),
            last["usage"]["outputTokens"],
        ));
    }

    crate::progress::done();
    if format == Format::Json {
        // One object for scripts, with what the lines below say.
        println!(
            "{}",
            serde_json::json!({
                "rest": base,
                "grpc": gateway.grpc_addr.to_string(),
                "openai": format!("{base}/v1/chat/completions"),
                "router": format!("http://{}/v1", router.http_addr),
                "metrics": {
                    "gateway": format!("http://{}/metrics", gateway.admin_addr),
                    "orchestrator": format!("http://{}/metrics", orchestrator.admin_addr),
                    "worker": format!("http://{}/metrics", worker.admin_addr),
                },
                "otlp": {
                    "grpc": traces.grpc_addr.to_string(),
                    "http": format!("http://{}/v1/traces", traces.http_addr),
                },
                "nats": env.get("NATS_URL"),
                "dataDir": data_dir.display().to_string(),
                "tokenFile": data_dir.join("dev-token").display().to_string(),
            })
        );
    } else {
        println!();
        println!("agentmesh is running (Ctrl-C stops it)");
        println!("  REST      {base}   (SSE: GET /v1/tasks/<id>/events)");
        println!(
            "  gRPC      {}  (agentmesh.v1.AgentService, TaskService)",
            gateway.grpc_addr
        );
        println!(
            "  OpenAI    {base}/v1/chat/completions  (with the token; the router itself: http://{}/v1)",
            router.http_addr
        );
        println!(
            "  metrics   http://{}/metrics (gateway), http://{}/metrics (orchestrator), http://{}/metrics (worker)",
            gateway.admin_addr, orchestrator.admin_addr, worker.admin_addr
        );
        println!(
            "  traces    {base}/v1/traces (OTLP in: grpc {}, http http://{}/v1/traces)",
            traces.grpc_addr, traces.http_addr
        );
        println!(
            "  NATS      {}",
            env.get("NATS_URL").map(String::as_str).unwrap_or("?")
        );
        println!("  data      {}", data_dir.display());
        println!(
            "  dev token (tenant \"dev\", admin) in {}:",
            data_dir.join("dev-token").display()
        );
        println!("    export AGENTMESH_TOKEN={token}");
        let me = std::env::current_exe()
            .ok()
            .and_then(|p| {
                let cwd = std::env::current_dir().ok()?;
                Some(p.strip_prefix(&cwd).map(Path::to_path_buf).unwrap_or(p))
            })
            .map_or_else(|| "agentmesh".to_owned(), |p| p.display().to_string());
        println!("  try       {me} run assistant \"What is JetStream?\"");
        println!("            curl -H \"Authorization: Bearer $AGENTMESH_TOKEN\" {base}/v1/tasks");
    }

    let signal = mesh_runtime::shutdown::on_signal();
    tokio::select! {
        _ = signal.cancelled() => step("stopping"),
        _ = shutdown.cancelled() => {}
    }
    shutdown.cancel();
    // Services drain in-flight work; each waits for its own components.
    let stopped = [
        gateway.stopped.wait().await,
        worker.stopped.wait().await,
        orchestrator.stopped.wait().await,
        router.stopped.wait().await,
        retrieval.stopped.wait().await,
        traces.stopped.wait().await,
    ];
    step("services stopped");
    crate::progress::done();
    for result in stopped {
        result?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_key_is_created_once_private_and_long_enough() {
        let dir = tempfile::tempdir().unwrap();
        let path = service_key_file(dir.path()).unwrap();
        let key = std::fs::read_to_string(&path).unwrap();
        assert!(
            key.len() >= mesh_auth::service::MIN_KEY_BYTES,
            "{}",
            key.len()
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // A second run keeps it: the services of both runs share the key.
        assert_eq!(service_key_file(dir.path()).unwrap(), path);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), key);
        // What the services read from it.
        let env = [(
            mesh_auth::service::KEY_FILE_VAR.to_owned(),
            path.display().to_string(),
        )]
        .into_iter()
        .collect();
        assert!(
            mesh_auth::service::ServiceAuthConfig::from_env(&env)
                .unwrap()
                .is_some()
        );
    }
}
