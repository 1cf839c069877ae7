//! `agentmesh autoscale`: runs an agent's workers as local processes and
//! resizes them by KEDA's rule, read from the agent's rendered
//! ScaledObject (`agentmesh render`). What KEDA does on Kubernetes, on one
//! machine: the proof that the scaling configuration behaves, and a way to
//! run bursty agents locally.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use mesh_scaling::{Replicas, ScalePolicy, Scaler};
use tokio::process::{Child, Command};

#[derive(clap::Args)]
pub struct AutoscaleArgs {
    /// A ScaledObject (or a folder/stream of manifests containing one).
    #[arg(short = 'f', long = "filename")]
    file: PathBuf,
    /// The ScaledObject's name, when the file holds several.
    #[arg(long)]
    name: Option<String>,
    /// The agent-worker binary (default: next to this one).
    #[arg(long)]
    worker_bin: Option<PathBuf>,
}

/// Worker processes; stopping one sends SIGTERM, so it drains.
struct ProcessReplicas {
    binary: PathBuf,
    agent: String,
    children: Vec<Child>,
}

impl Replicas for ProcessReplicas {
    fn current(&self) -> u32 {
        u32::try_from(self.children.len()).unwrap_or(u32::MAX)
    }

    async fn scale_to(&mut self, n: u32) -> Result<(), String> {
        while self.children.len() < n as usize {
            let child = Command::new(&self.binary)
                .env("AGENTMESH_WORKER_AGENTS", &self.agent)
                // Replicas share the machine: each picks a free admin port.
                .env("AGENTMESH_WORKER_ADMIN_LISTEN", "127.0.0.1:0")
                .env("AGENTMESH_WORKER_GRPC_LISTEN", "127.0.0.1:0")
                .stdin(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| format!("start {}: {e}", self.binary.display()))?;
            self.children.push(child);
        }
        while self.children.len() > n as usize {
            if let Some(mut child) = self.children.pop() {
                stop_gracefully(&mut child).await;
            }
        }
        Ok(())
    }
}

async fn stop_gracefully(child: &mut Child) {
    if let Some(pid) = child.id() {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .await;
        // Workers finish in-flight tasks before exiting.
        if tokio::time::timeout(Duration::from_secs(150), child.wait())
            .await
            .is_ok()
        {
            return;
        }
    }
    let _ = child.kill().await;
}

fn default_worker_bin() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    let dir = me.parent().context("no folder for this executable")?;
    Ok(dir.join("agent-worker"))
}

pub async fn run(args: AutoscaleArgs) -> anyhow::Result<()> {
    let text = read_manifests(&args.file)?;
    let policy = ScalePolicy::from_yaml(&text, args.name.as_deref())
        .with_context(|| format!("{}", args.file.display()))?;
    let Some(agent) = policy.consumer.strip_prefix("agent-").map(str::to_owned) else {
        bail!(
            "consumer {:?} is not an agent consumer (agent-<name>)",
            policy.consumer
        );
    };
    if policy.stream != mesh_bus::StreamKind::Tasks.name() {
        bail!("stream {:?}: agent workers consume TASKS", policy.stream);
    }
    let binary = match args.worker_bin {
        Some(path) => path,
        None => default_worker_bin()?,
    };
    if !binary.exists() {
        bail!(
            "no agent-worker binary at {} (cargo build -p agent-worker, or --worker-bin)",
            binary.display()
        );
    }
    let env = mesh_runtime::env::process_env();
    let shared = mesh_runtime::SharedConfig::from_env(&env)?;
    let bus =
        mesh_bus::Bus::connect(&shared.nats_url, "agentmesh-autoscale", shared.bus.clone()).await?;
    eprintln!(
        "==> scaling agent {agent:?} on {}/{}: {}..{} replicas, {} lag per replica, polling {:?}, cooldown {:?}",
        policy.stream,
        policy.consumer,
        policy.min_replicas,
        policy.max_replicas,
        policy.lag_threshold,
        policy.polling_interval,
        policy.cooldown
    );
    let mut replicas = ProcessReplicas {
        binary,
        agent,
        children: Vec::new(),
    };
    let mut scaler = Scaler::new(policy, Instant::now());
    let stop = mesh_runtime::shutdown::on_signal();
    mesh_scaling::run(&bus, &mut scaler, &mut replicas, stop, |from, to, lag| {
        eprintln!("==> {from} -> {to} replicas (lag {lag})");
    })
    .await;
    eprintln!("==> stopping {} worker(s)", replicas.current());
    replicas.scale_to(0).await.map_err(anyhow::Error::msg)?;
    Ok(())
}

fn read_manifests(path: &Path) -> anyhow::Result<String> {
    if path.is_dir() {
        let mut text = String::new();
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
            .collect();
        files.sort();
        for file in files {
            text.push_str("\n---\n");
            text.push_str(
                &std::fs::read_to_string(&file)
                    .with_context(|| format!("read {}", file.display()))?,
            );
        }
        Ok(text)
    } else {
        std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))
    }
}
