#![no_main]
//! Resource files as `agentmesh apply -f` reads them: YAML (or JSON), one
//! or several documents.
//!
//! Properties: the documents parse or the error names a document that
//! exists; each parsed resource written back as YAML parses to the same
//! resource; an Agent or Tool resource's spec goes through the typed parse
//! and validation without a panic.

use libfuzzer_sys::fuzz_target;
use mesh_spec::manifest::parse_documents;
use mesh_spec::{AgentSpecDoc, SpecLimits, ToolSpecDoc, validate_agent_spec, validate_tool_spec};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let resources = match parse_documents(text) {
        Ok(resources) => resources,
        Err(e) => {
            assert!(e.document >= 1, "{e}");
            return;
        }
    };
    let limits = SpecLimits::default();
    for (index, resource) in resources {
        let yaml = serde_yaml::to_string(&resource).expect("a resource is YAML");
        let again = parse_documents(&yaml)
            .unwrap_or_else(|e| panic!("document {index} written back as {yaml:?}: {e}"));
        assert_eq!(again.len(), 1, "{yaml:?}");
        assert_eq!(
            again[0].1, resource,
            "document {index} changed through YAML: {yaml:?}"
        );
        match resource.kind.as_str() {
            "Agent" => {
                if let Ok(doc) = serde_json::from_value::<AgentSpecDoc>(resource.spec) {
                    if let Ok(spec) = doc.to_proto() {
                        let _ = validate_agent_spec(&spec, &limits);
                    }
                }
            }
            "Tool" => {
                if let Ok(doc) = serde_json::from_value::<ToolSpecDoc>(resource.spec) {
                    if let Ok(spec) = doc.to_proto() {
                        let _ = validate_tool_spec("spec", &spec, &limits);
                    }
                }
            }
            _ => {}
        }
    }
});
