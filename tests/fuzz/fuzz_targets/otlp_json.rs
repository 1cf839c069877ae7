#![no_main]
//! OTLP/HTTP trace exports as the trace-collector receives them (JSON):
//! span validation, the split into bus-sized batches, the split by per-span
//! tenant (the mesh's own exporters), and the mapping of
//! each span to an observation row. Input: two bytes of batch limit, then
//! the body.
//!
//! Properties: validation keeps exactly the valid spans and counts the
//! rest; batches stay within the limit and lose no span they do not count
//! as dropped; the tenant split loses no span it does not count as
//! untenanted, and files each under the tenant it names.

use libfuzzer_sys::fuzz_target;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;
use trace_collector::ingest::{check_span, retain_valid, split};
use trace_collector::mapping::{hex, map_span};
use trace_collector::span_tenant::{TENANT_ATTRIBUTE, split_by_tenant};

fn spans(request: &ExportTraceServiceRequest) -> usize {
    request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum()
}

fuzz_target!(|data: &[u8]| {
    let Some((limit, body)) = data.split_first_chunk::<2>() else {
        return;
    };
    let limit = usize::from(u16::from_le_bytes(*limit)).max(64);

    let Ok(mut request) = serde_json::from_slice::<ExportTraceServiceRequest>(body) else {
        return;
    };
    let total = spans(&request);
    let by_tenant = split_by_tenant(request.clone());
    let filed: usize = by_tenant.batches.values().map(spans).sum();
    assert_eq!(filed as i64 + by_tenant.untenanted, total as i64);
    for (tenant, batch) in &by_tenant.batches {
        assert!(
            mesh_bus::names::validate("tenant", tenant).is_ok(),
            "{tenant:?}"
        );
        for resource in &batch.resource_spans {
            let resource_tenant = resource
                .resource
                .as_ref()
                .is_some_and(|r| r.attributes.iter().any(|kv| kv.key == TENANT_ATTRIBUTE));
            for span in resource.scope_spans.iter().flat_map(|s| &s.spans) {
                let own = span.attributes.iter().any(|kv| kv.key == TENANT_ATTRIBUTE);
                assert!(
                    own || resource_tenant,
                    "a span filed under {tenant} names none"
                );
            }
        }
    }

    let (rejected, first) = retain_valid(&mut request);
    let kept = spans(&request);
    assert_eq!(kept as i64 + rejected, total as i64);
    assert_eq!(first.is_some(), rejected > 0);
    for resource in &request.resource_spans {
        assert!(!resource.scope_spans.is_empty());
        for scope in &resource.scope_spans {
            assert!(!scope.spans.is_empty());
            for span in &scope.spans {
                assert!(check_span(span).is_ok());
                let row = map_span(
                    span,
                    resource
                        .resource
                        .as_ref()
                        .map_or(&[][..], |r| &r.attributes[..]),
                    scope.scope.as_ref().map_or("", |s| s.name.as_str()),
                );
                assert_eq!(row.trace_id, hex(&span.trace_id));
                assert_eq!(row.span_id, hex(&span.span_id));
            }
        }
    }

    let (batches, dropped) = split(request, limit);
    let batched: usize = batches.iter().map(spans).sum();
    assert_eq!(
        batched as i64 + dropped,
        kept as i64,
        "spans lost in the split"
    );
    for batch in &batches {
        assert!(
            batch.encoded_len() <= limit,
            "a batch of {} bytes over the limit {limit}",
            batch.encoded_len()
        );
    }
});
