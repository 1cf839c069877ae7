//! `agentmesh`: run the mesh on a laptop (`up`), apply agents, run tasks
//! and watch them, list and inspect tasks. Talks to the gateway's REST API.

mod agents;
mod api;
mod api_keys;
mod autoscale;
mod ingest;
mod manifest;
mod output;
mod progress;
mod trace_view;
mod up;
mod watch;

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use output::Format;
use serde_json::json;

#[derive(Parser)]
#[command(
    name = "agentmesh",
    version,
    about = "Run and use the agentmesh platform"
)]
struct Cli {
    /// Gateway REST base URL.
    #[arg(
        long,
        global = true,
        env = "AGENTMESH_URL",
        default_value = "http://127.0.0.1:8081"
    )]
    url: String,
    /// Bearer token; defaults to the dev token `agentmesh up` wrote.
    #[arg(long, global = true, env = "AGENTMESH_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Where `agentmesh up` keeps its state (and the dev token).
    #[arg(
        long,
        global = true,
        env = "AGENTMESH_DATA_DIR",
        default_value = ".data"
    )]
    data_dir: PathBuf,
    /// Output format.
    #[arg(
        short = 'o',
        long = "output",
        global = true,
        value_enum,
        default_value = "human"
    )]
    output: Format,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole mesh locally until Ctrl-C: NATS, the six services on
    /// SQLite, a local model server; then apply the example agent and run a
    /// sample task.
    Up(up::UpArgs),
    /// Apply resources (Agent, Tool) from a YAML/JSON file or a directory.
    Apply {
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
    },
    /// Render each agent's worker Deployment and KEDA ScaledObject (from its
    /// spec.scaling) as a Kustomize component, for a GitOps repository.
    Render {
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
        /// Output folder; one component per agent: <out>/agent-worker-<agent>/.
        #[arg(long = "out", default_value = "deploy/kustomize/components")]
        out: PathBuf,
        #[arg(long, default_value = "ai-agents")]
        namespace: String,
        #[arg(long, default_value = "agentmesh/agent-worker")]
        image: String,
        /// NATS monitoring endpoint KEDA polls.
        #[arg(long, default_value = "nats.ai-data.svc.cluster.local:8222")]
        nats_monitoring: String,
    },
    /// Run an agent's workers as local processes, scaled by KEDA's rule
    /// from its rendered ScaledObject, until Ctrl-C.
    Autoscale(autoscale::AutoscaleArgs),
    /// Submit a task and stream its events live.
    Run {
        agent: String,
        input: String,
        /// Submit and print the task id without waiting.
        #[arg(long)]
        detach: bool,
        /// Continue this conversation (session memory, concurrency policy).
        #[arg(long)]
        session: Option<String>,
    },
    /// Approve the tool call a task awaits (a `human` tool).
    Approve {
        id: String,
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// Reject the tool call a task awaits (a `human` tool).
    Reject {
        id: String,
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// List tasks (newest first); `--watch` keeps the list live.
    Tasks {
        #[arg(long)]
        agent: Option<String>,
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[arg(long, conflicts_with = "watch")]
        cursor: Option<String>,
        /// Poll until Ctrl-C: a redrawn table on a terminal, otherwise one
        /// line (or, with -o json, one JSON object) per task that appears or
        /// changes.
        #[arg(short = 'w', long)]
        watch: bool,
        /// How often --watch polls: 500ms, 2s, 1m (at least 200ms).
        #[arg(long, default_value = "2s", value_parser = watch::parse_interval)]
        interval: std::time::Duration,
    },
    /// Upload a folder of text documents into a retrieval collection, with
    /// a progress bar.
    Ingest(ingest::IngestArgs),
    /// Show one task.
    Task { id: String },
    /// List the tenant's agents by name (current version, model, update time).
    Agents(agents::AgentsArgs),
    /// Create, list and revoke the tenant's API keys (admin).
    ApiKeys {
        #[command(subcommand)]
        command: api_keys::ApiKeysCommand,
    },
    /// List traces (newest first); `agentmesh trace <id>` shows one.
    Traces {
        #[arg(long)]
        agent: Option<String>,
        #[arg(long)]
        session: Option<String>,
        #[arg(long)]
        user: Option<String>,
        /// `error` (some observation failed) or `ok`.
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        min_latency_ms: Option<i64>,
        /// USD.
        #[arg(long)]
        min_cost: Option<f64>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Show one trace as a waterfall tree (names, durations on a shared
    /// time axis, tokens, cost, errors); `-o json` prints the API's JSON.
    Trace {
        /// The trace id (32 hex digits).
        id: String,
        /// Columns of the time axis.
        #[arg(long, default_value_t = 40)]
        width: usize,
        /// Colour errors: auto (when stdout is a terminal and NO_COLOR is
        /// unset), always or never.
        #[arg(long, value_enum, default_value = "auto")]
        color: Color,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Color {
    Auto,
    Always,
    Never,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Up(args) => return up::run(args, &cli.data_dir, cli.output).await,
        Command::Autoscale(args) => return autoscale::run(args).await,
        Command::Render {
            file,
            out,
            namespace,
            image,
            nats_monitoring,
        } => {
            let options = mesh_scaling::RenderOptions {
                namespace,
                image,
                nats_monitoring,
                ..Default::default()
            };
            return render(&file, &out, &options, cli.output);
        }
        _ => {}
    }
    let token = match cli.token {
        Some(token) => token,
        None => std::fs::read_to_string(cli.data_dir.join("dev-token"))
            .map(|t| t.trim().to_owned())
            .with_context(|| {
                format!(
                    "no token: pass --token or AGENTMESH_TOKEN (or run `agentmesh up`, which writes {})",
                    cli.data_dir.join("dev-token").display()
                )
            })?,
    };
    let api = api::Api::new(&cli.url, token.clone());
    match cli.command {
        Command::Up(_) | Command::Render { .. } | Command::Autoscale(_) => {
            unreachable!("handled above")
        }
        Command::Apply { file } => apply(&api, &file, cli.output).await,
        Command::Approve {
            ref id,
            ref comment,
        }
        | Command::Reject {
            ref id,
            ref comment,
        } => {
            let approve = matches!(cli.command, Command::Approve { .. });
            let (id, comment) = (id.clone(), comment.clone());
            let task = api.decide(&id, approve, &comment).await?;
            match cli.output {
                Format::Json => println!("{task}"),
                Format::Human => println!(
                    "task {id} {}; it runs on",
                    if approve { "approved" } else { "rejected" }
                ),
            }
            Ok(())
        }
        Command::Run {
            agent,
            input,
            detach,
            session,
        } => {
            let task = api.submit(&agent, &input, session.as_deref()).await?;
            let id = task["id"].as_str().unwrap_or_default().to_owned();
            if detach {
                match cli.output {
                    Format::Json => println!("{task}"),
                    Format::Human => println!("{id}"),
                }
                return Ok(());
            }
            if cli.output == Format::Human {
                eprintln!("task {id} queued");
            }
            let last = api.follow(&id, cli.output).await?;
            match last["type"].as_str() {
                Some("completed") => Ok(()),
                Some(kind) => bail!(
                    "task {id} {kind}: {}",
                    last["error"]
                        .as_str()
                        .or(last["reason"].as_str())
                        .unwrap_or("")
                ),
                None => bail!("task {id} ended without a terminal event"),
            }
        }
        Command::Ingest(args) => ingest::run(&api, args, cli.output).await,
        Command::Agents(args) => agents::run(&cli.url, &token, args, cli.output).await,
        Command::ApiKeys { command } => api_keys::run(&cli.url, &token, command, cli.output).await,
        Command::Tasks {
            agent,
            status,
            limit,
            cursor,
            watch,
            interval,
        } => {
            let mut query = vec![("limit", limit.to_string())];
            query.extend(agent.map(|a| ("agent", a)));
            query.extend(status.map(|s| ("status", s)));
            query.extend(cursor.map(|c| ("cursor", c)));
            if watch {
                return watch::run(&api, &query, interval, cli.output).await;
            }
            let page = api.tasks(&query).await?;
            match cli.output {
                Format::Json => println!("{page}"),
                Format::Human => {
                    output::task_table(
                        page["tasks"]
                            .as_array()
                            .map(Vec::as_slice)
                            .unwrap_or_default(),
                    );
                    if let Some(next) = page["nextCursor"].as_str() {
                        println!("(more: --cursor {next})");
                    }
                }
            }
            Ok(())
        }
        Command::Traces {
            agent,
            session,
            user,
            status,
            min_latency_ms,
            min_cost,
            limit,
            cursor,
        } => {
            let mut query = vec![("limit", limit.to_string())];
            query.extend(agent.map(|a| ("agent", a)));
            query.extend(session.map(|s| ("session_id", s)));
            query.extend(user.map(|u| ("user_id", u)));
            query.extend(status.map(|s| ("status", s)));
            query.extend(min_latency_ms.map(|m| ("min_latency_ms", m.to_string())));
            query.extend(min_cost.map(|c| ("min_cost", c.to_string())));
            query.extend(cursor.map(|c| ("cursor", c)));
            let page = api.traces(&query).await?;
            match cli.output {
                Format::Json => println!("{page}"),
                Format::Human => {
                    let now_ms = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
                        .unwrap_or(0);
                    print!("{}", trace_view::list_table(&page, now_ms));
                }
            }
            Ok(())
        }
        Command::Trace { id, width, color } => {
            if !(8..=400).contains(&width) {
                bail!("--width: must be between 8 and 400 columns");
            }
            let trace = api.trace(&id).await?;
            match cli.output {
                Format::Json => println!("{trace}"),
                Format::Human => {
                    use std::io::IsTerminal as _;
                    let color = match color {
                        Color::Always => true,
                        Color::Never => false,
                        Color::Auto => {
                            std::io::stdout().is_terminal()
                                && std::env::var_os("NO_COLOR").is_none()
                        }
                    };
                    let layout = trace_view::Layout {
                        bar_width: width,
                        color,
                        ..trace_view::Layout::default()
                    };
                    print!("{}", trace_view::render(&trace, layout));
                }
            }
            Ok(())
        }
        Command::Task { id } => {
            let task = api.task(&id).await?;
            match cli.output {
                Format::Json => println!("{task}"),
                Format::Human => output::task_detail(&task),
            }
            Ok(())
        }
    }
}

async fn apply(api: &api::Api, file: &std::path::Path, format: Format) -> anyhow::Result<()> {
    let mut resources = manifest::load(file)?;
    for (origin, resource) in &resources {
        if !matches!(resource.kind.as_str(), "Agent" | "Tool") {
            bail!(
                "{origin}: unknown kind {:?}; expected Agent or Tool",
                resource.kind
            );
        }
    }
    // Tools first: an agent's references must resolve when it is applied.
    resources.sort_by_key(|(_, r)| r.kind != "Tool");
    let mut results = Vec::new();
    for (origin, resource) in resources {
        let name = &resource.metadata.name;
        let (kind, applied) = if resource.kind == "Tool" {
            ("tool", api.apply_tool(name, &resource.spec).await)
        } else {
            ("agent", api.apply_agent(name, &resource.spec).await)
        };
        // The API names the field within the spec; the file has it under `spec`.
        let applied =
            applied.with_context(|| format!("{origin}: {kind}/{name} (fields are under spec)"))?;
        let verb = if applied["changed"] == json!(true) {
            "applied"
        } else {
            "unchanged"
        };
        if format == Format::Human {
            println!("{kind}/{name} {verb} (version {})", applied["version"]);
        }
        results.push(applied);
    }
    if format == Format::Json {
        println!("{}", serde_json::Value::Array(results));
    }
    Ok(())
}

fn render(
    file: &std::path::Path,
    out: &std::path::Path,
    options: &mesh_scaling::RenderOptions,
    format: Format,
) -> anyhow::Result<()> {
    let mut written = Vec::new();
    for (origin, resource) in manifest::load(file)? {
        if resource.kind != "Agent" {
            continue;
        }
        let name = &resource.metadata.name;
        let scaling: mesh_scaling::AgentScaling = match resource.spec.get("scaling") {
            Some(value) => serde_json::from_value(value.clone())
                .with_context(|| format!("{origin}: agent {name}: spec.scaling"))?,
            None => {
                eprintln!("agent/{name} has no spec.scaling: using the defaults");
                mesh_scaling::AgentScaling::default()
            }
        };
        if let Err((field, why)) = scaling.validate() {
            bail!("{origin}: agent {name}: spec.scaling.{field}: {why}");
        }
        // The spec's pod resources, validated as an apply would.
        let mut options = options.clone();
        if resource.spec.get("resources").is_some() {
            let doc: mesh_spec::AgentSpecDoc = serde_json::from_value(resource.spec.clone())
                .with_context(|| format!("{origin}: agent {name}: spec"))?;
            let spec = doc
                .to_proto()
                .map_err(|e| anyhow::anyhow!("{origin}: agent {name}: {e}"))?;
            mesh_spec::validate_agent_spec(&spec, &mesh_spec::SpecLimits::default())
                .map_err(|e| anyhow::anyhow!("{origin}: agent {name}: {e}"))?;
            if let Some(resources) = &spec.resources {
                options.resources = options.resources.with_spec(resources);
            }
        }
        let files = mesh_scaling::agent_worker_component(name, &scaling, &options)
            .with_context(|| format!("{origin}: agent {name}"))?;
        let dir = out.join(format!("agent-worker-{name}"));
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        for (file_name, contents) in files {
            let path = dir.join(file_name);
            std::fs::write(&path, contents).with_context(|| format!("write {}", path.display()))?;
        }
        if format == Format::Human {
            println!("agent/{name} -> {}", dir.display());
        }
        written.push(json!({"agent": name, "component": dir.display().to_string()}));
    }
    if written.is_empty() {
        bail!("no Agent resources in {}", file.display());
    }
    if format == Format::Json {
        println!("{}", serde_json::Value::Array(written));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// The component committed under deploy/ is what `render` writes for
    /// the example agent: regenerate it, do not edit it.
    #[test]
    fn the_committed_assistant_component_is_renders_output() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let out = tempfile::tempdir().unwrap();
        super::render(
            &root.join("services/cli/agents/assistant.yaml"),
            out.path(),
            &mesh_scaling::RenderOptions::default(),
            super::Format::Json,
        )
        .unwrap();
        let rendered = out.path().join("agent-worker-assistant");
        let committed = root.join("deploy/kustomize/components/agent-worker-assistant");
        let mut names: Vec<_> = std::fs::read_dir(&rendered)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names.len(), 4, "{names:?}");
        for name in names {
            let want = std::fs::read_to_string(rendered.join(&name)).unwrap();
            let have = std::fs::read_to_string(committed.join(&name)).unwrap_or_default();
            assert_eq!(
                have, want,
                "{name:?} differs: run `agentmesh render -f services/cli/agents/assistant.yaml` from the repository root"
            );
        }
    }
}
