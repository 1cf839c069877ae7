#![no_main]
//! The Agent resource's `spec` as `PUT /v1/agents/{name}` receives it
//! (JSON): typed parse, conversion to the protobuf spec, validation.
//!
//! Properties: a parsed document serializes and parses back to itself; a
//! spec that passes validation is shown back (`from_proto`) as a document
//! that converts to the same spec (what `GET` returns is what was applied);
//! and the published JSON Schema accepts every document the API accepts.

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use mesh_spec::{API_VERSION, AgentSpecDoc, SpecLimits, validate_agent_spec};

static SCHEMA: LazyLock<jsonschema::Validator> = LazyLock::new(|| {
    jsonschema::validator_for(&mesh_spec::schema::agent()).expect("the agent schema compiles")
});

fuzz_target!(|data: &[u8]| {
    let Ok(doc) = serde_json::from_slice::<AgentSpecDoc>(data) else {
        return;
    };
    let Ok(proto) = doc.to_proto() else {
        return;
    };
    if validate_agent_spec(&proto, &SpecLimits::default()).is_err() {
        return;
    }
    // The orchestrator refuses a temperature outside 0..=2 before storing
    // (`validate_spec`); JSON has no infinity to write one back as.
    if proto.temperature.is_some_and(|t| !t.is_finite()) {
        return;
    }
    let text = serde_json::to_string(&doc).expect("a parsed document serializes");
    let again: AgentSpecDoc = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("its own serialization {text} does not parse: {e}"));
    assert_eq!(again, doc, "serialize/parse changed the document");

    let shown = AgentSpecDoc::from_proto(&proto);
    let back = shown
        .to_proto()
        .unwrap_or_else(|e| panic!("the shown spec {shown:?} does not convert: {e}"));
    assert_eq!(back, proto, "a stored spec is shown as a different spec");

    let resource = serde_json::json!({
        "apiVersion": API_VERSION,
        "kind": "Agent",
        "metadata": {"name": "fuzz"},
        "spec": serde_json::to_value(&doc).expect("a document is JSON"),
    });
    let errors: Vec<String> = SCHEMA
        .iter_errors(&resource)
        .map(|e| e.to_string())
        .collect();
    assert!(
        errors.is_empty(),
        "the API accepts {text} but the published schema refuses it: {errors:?}"
    );
});
