//! Telemetry shared by every service: the `tracing` subscriber (with an
//! OTLP exporter when `OTEL_EXPORTER_OTLP_ENDPOINT` is set), W3C trace-context
//! propagation across NATS headers, gRPC metadata and HTTP headers, and the
//! Prometheus text encoding of a service's metric registry.
//!
//! This crate never decides *what* a service measures; services own their
//! metric families and register them in their own [`Registry`].
//!
//! The OTLP exporter sends the process's service token
//! ([`mesh_auth::service::installed`]) with every export, so the mesh's
//! trace-collector accepts it; spans name their tenant with the
//! [`TENANT_ATTRIBUTE`] attribute, since one export mixes tenants.

mod propagation;

pub use opentelemetry::Context as TraceContext;
pub use prometheus_client;
pub use prometheus_client::registry::Registry;
pub use propagation::{
    current_context_headers, extract_grpc, extract_http, extract_nats, inject_grpc, inject_http,
    inject_nats, set_parent,
};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig as _, WithTonicConfig as _};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::{EnvFilter, layer::SubscriberExt as _, util::SubscriberInitExt as _};

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("otlp exporter: {0}")]
    Exporter(String),
    #[error("encode metrics: {0}")]
    Encode(#[from] std::fmt::Error),
}

/// Keeps the OTLP pipeline alive; [`TelemetryGuard::shutdown`] flushes it.
#[derive(Default)]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// Exports the spans buffered so far (blocking: call it off the async
    /// workers); the pipeline stays up.
    pub fn flush(&self) {
        if let Some(provider) = &self.provider
            && let Err(error) = provider.force_flush()
        {
            tracing::warn!(%error, "otlp flush failed");
        }
    }

    /// Flushes buffered spans. Call last, after the service has drained.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(error) = provider.shutdown()
        {
            tracing::warn!(%error, "otlp shutdown failed");
        }
    }
}

/// Installs the global subscriber: logs on stderr filtered by `RUST_LOG`
/// (else `default_filter`), JSON when `json_logs`, and, when
/// `otlp_endpoint` is given, spans exported over OTLP/gRPC under
/// `service_name`.
///
/// Safe to call more than once (tests start several services in one
/// process): only the first call installs anything.
pub fn init(
    service_name: &str,
    otlp_endpoint: Option<&str>,
    json_logs: bool,
    default_filter: &str,
) -> Result<TelemetryGuard, TelemetryError> {
    init_with_channel(service_name, otlp_endpoint, None, json_logs, default_filter)
}

/// [`init`], exporting over `otlp_channel` when given (a channel with the
/// mesh's mutual TLS: `mesh_runtime::tls::otlp_channel`) instead of one
/// the exporter dials itself.
pub fn init_with_channel(
    service_name: &str,
    otlp_endpoint: Option<&str>,
    otlp_channel: Option<tonic::transport::Channel>,
    json_logs: bool,
    default_filter: &str,
) -> Result<TelemetryGuard, TelemetryError> {
    use tracing_subscriber::Layer as _;
    // Spans always exist at INFO and above, whatever the log filter says:
    // they carry the W3C context across gRPC and NATS even when nothing is
    // exported, so one task stays one trace once an exporter is added.
    let provider = tracer_provider(service_name, otlp_endpoint, otlp_channel)?;
    let otel_layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer(service_name.to_owned()))
        .with_filter(tracing_subscriber::filter::LevelFilter::INFO);
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let logs = if json_logs {
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed()
    };
    let installed = tracing_subscriber::registry()
        .with(otel_layer)
        .with(logs)
        .try_init()
        .is_ok();
    Ok(TelemetryGuard {
        provider: installed.then_some(provider),
    })
}

/// The OTel pipeline: a batch exporter over OTLP/gRPC when `otlp_endpoint`
/// is given, over `otlp_channel` when given (else the tonic channel is built
/// here: call within a Tokio runtime).
fn tracer_provider(
    service_name: &str,
    otlp_endpoint: Option<&str>,
    otlp_channel: Option<tonic::transport::Channel>,
) -> Result<SdkTracerProvider, TelemetryError> {
    let mut builder = SdkTracerProvider::builder().with_resource(
        opentelemetry_sdk::Resource::builder()
            .with_service_name(service_name.to_owned())
            .build(),
    );
    if let Some(endpoint) = otlp_endpoint {
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .with_interceptor(ServiceToken);
        if let Some(channel) = otlp_channel {
            exporter = exporter.with_channel(channel);
        }
        let exporter = exporter
            .build()
            .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
        builder = builder.with_batch_exporter(exporter);
    }
    Ok(builder.build())
}

/// A subscriber that exports spans (INFO and above, no logs) over OTLP/gRPC
/// to `otlp_endpoint` under `service_name`, NOT installed globally: for a
/// process that hosts several services (the integration tests) where one
/// of them must export to an endpoint of its own. Set it as the default
/// dispatcher of that service's threads; the guard flushes it.
pub fn exporting_dispatch(
    service_name: &str,
    otlp_endpoint: &str,
) -> Result<(tracing::Dispatch, TelemetryGuard), TelemetryError> {
    use tracing_subscriber::Layer as _;
    let provider = tracer_provider(service_name, Some(otlp_endpoint), None)?;
    let layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer(service_name.to_owned()))
        .with_filter(tracing_subscriber::filter::LevelFilter::INFO);
    let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(layer));
    Ok((
        dispatch,
        TelemetryGuard {
            provider: Some(provider),
        },
    ))
}

/// Sets a span attribute whose value is a list of strings (a `tracing`
/// field holds one scalar), such as `gen_ai.response.finish_reasons`.
pub fn set_string_array(span: &tracing::Span, key: &'static str, values: Vec<String>) {
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let values = values
        .into_iter()
        .map(opentelemetry::StringValue::from)
        .collect();
    span.set_attribute(
        key,
        opentelemetry::Value::Array(opentelemetry::Array::String(values)),
    );
}

/// The span attribute naming the tenant a span was recorded for (the
/// trace-collector files a service's spans under it).
pub const TENANT_ATTRIBUTE: &str = "agentmesh.tenant";

/// Adds the process's service token to each export. Read per export, so a
/// credential installed after [`init`] (services install theirs at start)
/// and every refresh of the token are picked up. Without a credential the
/// export goes out bare and an agentmesh collector refuses it.
#[derive(Debug, Clone, Copy)]
struct ServiceToken;

impl tonic::service::Interceptor for ServiceToken {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(credential) = mesh_auth::service::installed() {
            let token = credential
                .token()
                .map_err(|e| tonic::Status::internal(e.to_string()))?;
            let value = token
                .parse()
                .map_err(|_| tonic::Status::internal("service token is not a metadata value"))?;
            request
                .metadata_mut()
                .insert(mesh_auth::service::SERVICE_TOKEN_HEADER, value);
        }
        Ok(request)
    }
}

/// The Prometheus text exposition of a registry (`/metrics`).
pub fn encode_metrics(registry: &Registry) -> Result<String, TelemetryError> {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry)?;
    Ok(out)
}
