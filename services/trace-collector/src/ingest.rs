//! The receiver's core, shared by OTLP/gRPC and OTLP/HTTP: validate each
//! span, put the accepted ones on TRACES (`traces.<tenant>`) and report
//! partial success. The receiver never touches the database: the writers
//! behind the durable consumer do, which is what scales on queue depth.

use mesh_bus::{Bus, BusError, names};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest,
};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prometheus_client::metrics::counter::Counter;
use prost::Message as _;

/// Receiver counters (`/metrics`).
#[derive(Debug, Clone, Default)]
pub struct IngestMetrics {
    pub accepted: Counter,
    pub rejected: Counter,
}

#[derive(Debug, Clone)]
pub struct Receiver {
    bus: Bus,
    metrics: IngestMetrics,
    /// Largest message TRACES accepts; bigger batches are split.
    max_message_bytes: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The tenant is not a valid name (callers check it first; this keeps
    /// a bad one from ever reaching a subject).
    #[error("{0}")]
    InvalidTenant(BusError),
    /// The batch could not be made durable; the client should retry.
    #[error("enqueue spans: {0}")]
    Unavailable(#[from] BusError),
}

/// Why a span is refused, naming the field.
pub fn check_span(span: &Span) -> Result<(), &'static str> {
    if span.trace_id.len() != 16 || span.trace_id.iter().all(|b| *b == 0) {
        return Err("trace_id must be 16 bytes and not all zero");
    }
    if span.span_id.len() != 8 || span.span_id.iter().all(|b| *b == 0) {
        return Err("span_id must be 8 bytes and not all zero");
    }
    if !span.parent_span_id.is_empty() && span.parent_span_id.len() != 8 {
        return Err("parent_span_id must be empty or 8 bytes");
    }
    if span.name.is_empty() {
        return Err("name must not be empty");
    }
    Ok(())
}

/// Keeps the valid spans (dropping scopes and resources left empty);
/// returns how many were rejected and the first reason.
pub fn retain_valid(request: &mut ExportTraceServiceRequest) -> (i64, Option<&'static str>) {
    let (mut rejected, mut first) = (0_i64, None);
    for resource in &mut request.resource_spans {
        for scope in &mut resource.scope_spans {
            scope.spans.retain(|span| match check_span(span) {
                Ok(()) => true,
                Err(reason) => {
                    rejected += 1;
                    first.get_or_insert(reason);
                    false
                }
            });
        }
        resource.scope_spans.retain(|s| !s.spans.is_empty());
    }
    request.resource_spans.retain(|r| !r.scope_spans.is_empty());
    (rejected, first)
}

/// Splits a request into requests whose encoding stays under `limit`
/// bytes (resource and scope repeated in each); spans that alone exceed it
/// are dropped and counted.
pub fn split(
    request: ExportTraceServiceRequest,
    limit: usize,
) -> (Vec<ExportTraceServiceRequest>, i64) {
    if request.encoded_len() <= limit {
        return (vec![request], 0);
    }
    // Room for the resource, the scope and the framing of each level.
    let (mut chunks, mut dropped) = (Vec::new(), 0_i64);
    let mut current = ExportTraceServiceRequest::default();
    let mut size = 0_usize;
    for resource in request.resource_spans {
        let resource_head = ResourceSpans {
            resource: resource.resource.clone(),
            scope_spans: Vec::new(),
            schema_url: resource.schema_url.clone(),
        };
        for scope in resource.scope_spans {
            let scope_head = ScopeSpans {
                scope: scope.scope.clone(),
                spans: Vec::new(),
                schema_url: scope.schema_url.clone(),
            };
            let overhead = resource_head.encoded_len() + scope_head.encoded_len() + 32;
            for span in scope.spans {
                let span_size = span.encoded_len() + 8;
                if span_size + overhead > limit {
                    dropped += 1;
                    continue;
                }
                if size + span_size + overhead > limit && size > 0 {
                    chunks.push(std::mem::take(&mut current));
                    size = 0;
                }
                let same_resource = size > 0
                    && current.resource_spans.last().is_some_and(|r| {
                        r.resource == resource_head.resource
                            && r.schema_url == resource_head.schema_url
                    });
                if !same_resource {
                    current.resource_spans.push(resource_head.clone());
                    size += resource_head.encoded_len() + 8;
                }
                let Some(last_resource) = current.resource_spans.last_mut() else {
                    continue;
                };
                let same_scope = last_resource.scope_spans.last().is_some_and(|s| {
                    s.scope == scope_head.scope && s.schema_url == scope_head.schema_url
                });
                if !same_scope {
                    last_resource.scope_spans.push(scope_head.clone());
                    size += scope_head.encoded_len() + 8;
                }
                if let Some(last_scope) = last_resource.scope_spans.last_mut() {
                    size += span_size;
                    last_scope.spans.push(span);
                }
            }
        }
    }
    if size > 0 {
        chunks.push(current);
    }
    (chunks, dropped)
}

/// A stable 128-bit digest (XXH3-128, a specified algorithm, so replicas
/// of any version agree): the `Nats-Msg-Id` of a batch, so a client
/// retrying the same export within the duplicate window is stored once.
/// Each part is length-prefixed, so ("ab", "c") and ("a", "bc") differ. A
/// batch is hashed whole on every export: a byte-at-a-time hash cost more
/// than everything else the receiver does with the bytes.
pub fn digest(parts: &[&[u8]]) -> String {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    for part in parts {
        hasher.update(&(part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    format!("{:032x}", hasher.digest128())
}

/// Whether every span of `request` passes [`check_span`].
fn all_valid(request: &ExportTraceServiceRequest) -> bool {
    request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .all(|span| check_span(span).is_ok())
}

fn count_spans(request: &ExportTraceServiceRequest) -> i64 {
    let n: usize = request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum();
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Receiver {
    pub fn new(bus: Bus, metrics: IngestMetrics) -> Self {
        let max_message_bytes = usize::try_from(bus.config().max_message_bytes)
            .unwrap_or(1024 * 1024)
            // Headers and the stream's own framing share the limit.
            .saturating_sub(4096)
            .max(4096);
        Self {
            bus,
            metrics,
            max_message_bytes,
        }
    }

    /// Validates and enqueues one export for `tenant` (already checked);
    /// returns the partial success to answer (`None` when all were accepted).
    pub async fn export(
        &self,
        tenant: &str,
        request: ExportTraceServiceRequest,
    ) -> Result<Option<ExportTracePartialSuccess>, IngestError> {
        self.export_encoded(tenant, request, None).await
    }

    /// [`Receiver::export`] of a request decoded from the protobuf `body`:
    /// when every span is valid and the body fits one bus message, the
    /// body itself is what goes on TRACES (the writer decodes it the same
    /// way the receiver just did), so the common case never re-encodes.
    /// Anything else takes the general path: drop the invalid spans, split,
    /// encode.
    pub async fn export_encoded(
        &self,
        tenant: &str,
        mut request: ExportTraceServiceRequest,
        body: Option<bytes::Bytes>,
    ) -> Result<Option<ExportTracePartialSuccess>, IngestError> {
        names::validate("tenant", tenant).map_err(IngestError::InvalidTenant)?;
        let subject = format!("traces.{tenant}");
        let forward_as_is = body.filter(|body| {
            body.len() <= self.max_message_bytes && all_valid(&request) && count_spans(&request) > 0
        });
        let (accepted, rejected, reason) = if let Some(body) = forward_as_is {
            let accepted = count_spans(&request);
            // The decoded copy is only needed for the checks above.
            drop(request);
            self.enqueue(&subject, tenant, vec![body]).await?;
            (accepted, 0, None)
        } else {
            let (mut rejected, mut reason) = retain_valid(&mut request);
            let (chunks, too_big) = split(request, self.max_message_bytes);
            if too_big > 0 {
                rejected += too_big;
                reason.get_or_insert("span larger than the bus message limit");
            }
            let accepted = chunks.iter().map(count_spans).sum();
            // A request left without spans puts nothing on the bus.
            let bodies = chunks
                .iter()
                .filter(|chunk| count_spans(chunk) > 0)
                .map(|chunk| bytes::Bytes::from(chunk.encode_to_vec()))
                .collect();
            self.enqueue(&subject, tenant, bodies).await?;
            (accepted, rejected, reason)
        };
        self.metrics
            .accepted
            .inc_by(u64::try_from(accepted).unwrap_or(0));
        self.metrics
            .rejected
            .inc_by(u64::try_from(rejected).unwrap_or(0));
        Ok((rejected > 0).then(|| ExportTracePartialSuccess {
            rejected_spans: rejected,
            error_message: format!(
                "{rejected} span(s) rejected: {}",
                reason.unwrap_or("invalid span")
            ),
        }))
    }

    /// Publishes the encoded batches of one export on `subject` and waits
    /// until TRACES has stored every one: all are sent before the first
    /// ack is awaited, so one export costs one round trip however many
    /// messages it took.
    async fn enqueue(
        &self,
        subject: &str,
        tenant: &str,
        bodies: Vec<bytes::Bytes>,
    ) -> Result<(), IngestError> {
        let mut pending = Vec::with_capacity(bodies.len());
        for body in bodies {
            let mut headers = async_nats::HeaderMap::new();
            let msg_id = format!("trc:{}", digest(&[tenant.as_bytes(), &body]));
            headers.insert(mesh_bus::HEADER_MSG_ID, msg_id.as_str());
            headers.insert(mesh_bus::HEADER_TENANT, tenant);
            mesh_telemetry::inject_nats(&mut headers);
            pending.push(
                self.bus
                    .publish_raw(subject.to_owned(), headers, body)
                    .await?,
            );
        }
        for ack in pending {
            ack.await.map_err(|e| BusError::Publish {
                subject: subject.to_owned(),
                message: e.to_string(),
            })?;
        }
        Ok(())
    }
}

impl Receiver {
    /// Enqueues an export of an authenticated internal sender whose spans
    /// name their tenants (see [`crate::span_tenant`]): each tenant's spans
    /// as one export; spans naming none are dropped and counted as
    /// rejected.
    pub async fn export_by_span_tenant(
        &self,
        request: ExportTraceServiceRequest,
    ) -> Result<Option<ExportTracePartialSuccess>, IngestError> {
        let split = crate::span_tenant::split_by_tenant(request);
        let (mut rejected, mut message) = (split.untenanted, None);
        if split.untenanted > 0 {
            self.metrics
                .rejected
                .inc_by(u64::try_from(split.untenanted).unwrap_or(0));
            message = Some(format!(
                "{} span(s) rejected: no valid {} attribute (span or resource)",
                split.untenanted,
                crate::span_tenant::TENANT_ATTRIBUTE
            ));
        }
        for (tenant, batch) in split.batches {
            if let Some(partial) = self.export(&tenant, batch).await? {
                rejected += partial.rejected_spans;
                message.get_or_insert(partial.error_message);
            }
        }
        Ok((rejected > 0).then(|| ExportTracePartialSuccess {
            rejected_spans: rejected,
            error_message: message.unwrap_or_default(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(i: u8, name: &str) -> Span {
        Span {
            trace_id: vec![7; 16],
            span_id: vec![i; 8],
            name: name.to_owned(),
            ..Default::default()
        }
    }

    fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn invalid_spans_are_counted_and_dropped() {
        let mut bad_trace = span(2, "x");
        bad_trace.trace_id = vec![0; 16];
        let mut bad_span = span(0, "y");
        bad_span.span_id = vec![0; 8];
        let mut r = request(vec![span(1, "ok"), bad_trace, bad_span, span(4, "")]);
        let (rejected, reason) = retain_valid(&mut r);
        assert_eq!(rejected, 3);
        assert!(reason.is_some_and(|r| r.contains("trace_id")));
        assert_eq!(count_spans(&r), 1);
        let mut all_bad = request(vec![span(5, "")]);
        assert_eq!(retain_valid(&mut all_bad).0, 1);
        assert!(all_bad.resource_spans.is_empty());
    }

    #[test]
    fn split_keeps_every_span_under_the_limit() {
        let spans: Vec<Span> = (1..=200).map(|i| span(i, &"n".repeat(100))).collect();
        let r = request(spans);
        let (chunks, dropped) = split(r.clone(), 4096);
        assert_eq!(dropped, 0);
        assert!(chunks.len() > 1);
        assert!(chunks.iter().all(|c| c.encoded_len() <= 4096));
        assert_eq!(chunks.iter().map(count_spans).sum::<i64>(), 200);
        let (whole, _) = split(r, 1 << 20);
        assert_eq!(whole.len(), 1);
    }

    #[test]
    fn digest_is_stable_and_separates_parts() {
        assert_eq!(digest(&[b"a", b"bc"]), digest(&[b"a", b"bc"]));
        assert_ne!(digest(&[b"ab", b"c"]), digest(&[b"a", b"bc"]));
        assert_eq!(digest(&[b"x"]).len(), 32);
    }
}
