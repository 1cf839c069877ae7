//! The retrieval binary: configuration from the environment, telemetry, then
//! `retrieval::run` until SIGTERM or Ctrl-C.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let env = mesh_runtime::env::process_env();
    let config = retrieval::config_from_env(&env)?;
    let telemetry = mesh_telemetry::init_with_channel(
        "retrieval",
        config.shared.otlp_endpoint.as_deref(),
        // Mesh TLS to the collector's OTLP/gRPC port, when configured.
        mesh_runtime::tls::otlp_channel(&config.shared)?,
        env.get("AGENTMESH_LOG_FORMAT").is_some_and(|f| f == "json"),
        "info",
    )?;
    let result = retrieval::run(config, mesh_runtime::shutdown::on_signal()).await;
    telemetry.shutdown();
    result
}
