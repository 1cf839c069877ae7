//! W3C trace context (`traceparent`, `tracestate`) in and out of the three
//! carriers the mesh uses. Always the W3C format, independent of any global
//! propagator a host application may have installed.

use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

fn propagator() -> TraceContextPropagator {
    TraceContextPropagator::new()
}

struct NatsInjector<'a>(&'a mut async_nats::HeaderMap);
impl Injector for NatsInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key, value.as_str());
    }
}
struct NatsExtractor<'a>(&'a async_nats::HeaderMap);
impl Extractor for NatsExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|v| v.as_str())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_ref()).collect()
    }
}

struct HttpInjector<'a>(&'a mut http::HeaderMap);
impl Injector for HttpInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}
struct HttpExtractor<'a>(&'a http::HeaderMap);
impl Extractor for HttpExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Writes the current span's context into NATS headers.
pub fn inject_nats(headers: &mut async_nats::HeaderMap) {
    let cx = tracing::Span::current().context();
    propagator().inject_context(&cx, &mut NatsInjector(headers));
}

pub fn extract_nats(headers: &async_nats::HeaderMap) -> Context {
    propagator().extract(&NatsExtractor(headers))
}

/// Writes the current span's context into HTTP headers.
pub fn inject_http(headers: &mut http::HeaderMap) {
    let cx = tracing::Span::current().context();
    propagator().inject_context(&cx, &mut HttpInjector(headers));
}

pub fn extract_http(headers: &http::HeaderMap) -> Context {
    propagator().extract(&HttpExtractor(headers))
}

/// Writes the current span's context into gRPC request metadata.
pub fn inject_grpc(metadata: &mut tonic::metadata::MetadataMap) {
    // tonic metadata is an HTTP header map underneath.
    let mut headers = http::HeaderMap::new();
    inject_http(&mut headers);
    for (name, value) in &headers {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(name.as_str().as_bytes()),
            tonic::metadata::MetadataValue::try_from(value.as_bytes()),
        ) {
            metadata.insert(key, value);
        }
    }
}

pub fn extract_grpc(metadata: &tonic::metadata::MetadataMap) -> Context {
    let headers = metadata.clone().into_headers();
    extract_http(&headers)
}

/// The current context as `(name, value)` pairs, for carriers built by hand.
pub fn current_context_headers() -> Vec<(String, String)> {
    let mut headers = http::HeaderMap::new();
    inject_http(&mut headers);
    headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect()
}

/// Makes `span` a child of the remote context `cx` (when it carries one).
pub fn set_parent(span: &tracing::Span, cx: Context) {
    use opentelemetry::trace::TraceContextExt as _;
    if cx.span().span_context().is_valid() {
        // Fails only when no OpenTelemetry layer is installed: nothing to link.
        let _ = span.set_parent(cx);
    }
}
