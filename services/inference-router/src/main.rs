//! The inference-router binary: configuration from the environment,
//! telemetry, then `inference_router::run` until SIGTERM or Ctrl-C.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let env = mesh_runtime::env::process_env();
    let config = inference_router::Config::from_env(&env)?;
    let telemetry = mesh_telemetry::init_with_channel(
        "inference-router",
        config.shared.otlp_endpoint.as_deref(),
        // Mesh TLS to the collector's OTLP/gRPC port, when configured.
        mesh_runtime::tls::otlp_channel(&config.shared)?,
        env.get("AGENTMESH_LOG_FORMAT").is_some_and(|f| f == "json"),
        "info",
    )?;
    let result = inference_router::run(config, mesh_runtime::shutdown::on_signal()).await;
    telemetry.shutdown();
    result
}
