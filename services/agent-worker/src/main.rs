//! The agent-worker binary: configuration from the environment, telemetry,
//! then `agent_worker::run` until SIGTERM or Ctrl-C.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let env = mesh_runtime::env::process_env();
    let config = agent_worker::Config::from_env(&env)?;
    let telemetry = mesh_telemetry::init_with_channel(
        "agent-worker",
        config.shared.otlp_endpoint.as_deref(),
        // Mesh TLS to the collector's OTLP/gRPC port, when configured.
        mesh_runtime::tls::otlp_channel(&config.shared)?,
        env.get("AGENTMESH_LOG_FORMAT").is_some_and(|f| f == "json"),
        "info",
    )?;
    let result = agent_worker::run(config, mesh_runtime::shutdown::on_signal()).await;
    telemetry.shutdown();
    result
}
