//! Tenants named per span, for the mesh's own services: one OTLP export of
//! a service mixes the spans of many tenants, so an authenticated internal
//! sender that names no tenant for the whole call (no `agentmesh-tenant`
//! header) names one per span with the `agentmesh.tenant` attribute, or
//! once for a resource with the same resource attribute.
//!
//! Spans that name no valid tenant either way (a service's background work:
//! probes, relays, bus housekeeping) are dropped and counted as rejected in
//! the partial success: filing them under a made-up "system" tenant would
//! hand them to whoever gets a tenant of that name. This module never runs
//! for an unauthenticated caller: only a holder of the mesh key may name
//! tenants.

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};

pub use mesh_runtime::grpc::TENANT_ATTRIBUTE;

/// An export split by tenant.
#[derive(Debug, Default)]
pub struct ByTenant {
    pub batches: BTreeMap<String, ExportTraceServiceRequest>,
    /// Spans without a valid tenant, dropped.
    pub untenanted: i64,
}

/// The valid tenant named by `attributes`, if any.
fn tenant_in(attributes: &[KeyValue]) -> Option<&str> {
    let value = attributes
        .iter()
        .find(|kv| kv.key == TENANT_ATTRIBUTE)?
        .value
        .as_ref()?;
    match &value.value {
        Some(any_value::Value::StringValue(tenant))
            if mesh_bus::names::validate("tenant", tenant).is_ok() =>
        {
            Some(tenant)
        }
        _ => None,
    }
}

/// Splits `request` by the tenant of each span (its own attribute, else its
/// resource's), keeping resource and scope around each tenant's spans.
pub fn split_by_tenant(request: ExportTraceServiceRequest) -> ByTenant {
    let mut out = ByTenant::default();
    for resource in request.resource_spans {
        let resource_tenant = resource
            .resource
            .as_ref()
            .and_then(|r| tenant_in(&r.attributes))
            .map(str::to_owned);
        // Tenants that already hold a copy of this resource (its index in
        // their batch).
        let mut opened: BTreeMap<String, usize> = BTreeMap::new();
        for scope in resource.scope_spans {
            let mut per_tenant: BTreeMap<String, Vec<_>> = BTreeMap::new();
            for span in scope.spans {
                let tenant = tenant_in(&span.attributes)
                    .map(str::to_owned)
                    .or_else(|| resource_tenant.clone());
                match tenant {
                    Some(tenant) => per_tenant.entry(tenant).or_default().push(span),
                    None => out.untenanted += 1,
                }
            }
            for (tenant, spans) in per_tenant {
                let batch = out.batches.entry(tenant.clone()).or_default();
                let index = *opened.entry(tenant).or_insert_with(|| {
                    batch.resource_spans.push(ResourceSpans {
                        resource: resource.resource.clone(),
                        scope_spans: Vec::new(),
                        schema_url: resource.schema_url.clone(),
                    });
                    batch.resource_spans.len() - 1
                });
                batch.resource_spans[index].scope_spans.push(ScopeSpans {
                    scope: scope.scope.clone(),
                    spans,
                    schema_url: scope.schema_url.clone(),
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::AnyValue;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::Span;

    fn tenant_attr(tenant: &str) -> KeyValue {
        KeyValue {
            key: TENANT_ATTRIBUTE.to_owned(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(tenant.to_owned())),
            }),
            ..Default::default()
        }
    }

    fn span(name: &str, tenant: Option<&str>) -> Span {
        Span {
            name: name.to_owned(),
            attributes: tenant.map(tenant_attr).into_iter().collect(),
            ..Default::default()
        }
    }

    fn names(request: &ExportTraceServiceRequest) -> Vec<String> {
        request
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .map(|s| s.name.clone())
            .collect()
    }

    #[test]
    fn spans_go_to_their_tenant_the_resource_tenant_or_nowhere() {
        let request = ExportTraceServiceRequest {
            resource_spans: vec![
                ResourceSpans {
                    resource: Some(Resource {
                        attributes: vec![tenant_attr("globex")],
                        ..Default::default()
                    }),
                    scope_spans: vec![ScopeSpans {
                        spans: vec![span("r1", None), span("r2", Some("acme"))],
                        ..Default::default()
                    }],
                    ..Default::default()
                },
                ResourceSpans {
                    scope_spans: vec![
                        ScopeSpans {
                            spans: vec![
                                span("a1", Some("acme")),
                                span("none", None),
                                span("bad", Some("not.a.tenant")),
                            ],
                            ..Default::default()
                        },
                        ScopeSpans {
                            spans: vec![span("a2", Some("acme"))],
                            ..Default::default()
                        },
                    ],
                    ..Default::default()
                },
            ],
        };
        let split = split_by_tenant(request);
        assert_eq!(split.untenanted, 2);
        assert_eq!(split.batches.len(), 2);
        assert_eq!(names(&split.batches["globex"]), ["r1"]);
        let acme = &split.batches["acme"];
        assert_eq!(names(acme), ["r2", "a1", "a2"]);
        // One copy of each resource, its scopes kept apart.
        assert_eq!(acme.resource_spans.len(), 2);
        assert_eq!(acme.resource_spans[1].scope_spans.len(), 2);
    }
}
