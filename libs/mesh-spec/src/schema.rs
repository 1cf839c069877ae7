//! The JSON Schema of the Agent and Tool resource documents, generated from
//! the typed documents so that the schema and the parser cannot disagree.
//! The API serves it (`GET /v1/schemas/{agent,tool}`) and the repo keeps a
//! copy in `libs/mesh-spec/schemas/` (a test fails when the copy is stale).

use serde_json::{Value, json};

use crate::tool::ToolConfig;
use crate::{API_VERSION, AgentSpecDoc, ToolSpecDoc};

fn document(kind: &str, spec: Value) -> Value {
    let mut spec = spec;
    let defs = spec
        .as_object_mut()
        .and_then(|o| o.remove("$defs"))
        .unwrap_or_else(|| json!({}));
    if let Some(o) = spec.as_object_mut() {
        o.remove("$schema");
        o.remove("title");
    }
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": format!("https://agentmesh.dev/schemas/{}.{API_VERSION_SUFFIX}.json", kind.to_lowercase()),
        "title": kind,
        "type": "object",
        "additionalProperties": false,
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": API_VERSION},
            "kind": {"const": kind},
            "metadata": {
                "type": "object",
                "additionalProperties": false,
                "required": ["name"],
                "properties": {
                    "name": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}}
                }
            },
            "spec": spec
        },
        "$defs": defs,
    })
}

const API_VERSION_SUFFIX: &str = "v1alpha1";

/// The Agent resource document.
pub fn agent() -> Value {
    document(
        "Agent",
        serde_json::to_value(schemars::schema_for!(AgentSpecDoc)).unwrap_or_default(),
    )
}

/// The Tool resource document; `config` is typed by `type`.
pub fn tool() -> Value {
    let mut spec = serde_json::to_value(schemars::schema_for!(ToolSpecDoc)).unwrap_or_default();
    spec["properties"]["type"]["enum"] = json!(crate::TOOL_TYPES);
    spec["allOf"] = ToolConfig::schemas()
        .into_iter()
        .map(|(kind, mut schema)| {
            if let Some(o) = schema.as_object_mut() {
                o.remove("$schema");
            }
            json!({"if": {"properties": {"type": {"const": kind}}}, "then": {"properties": {"config": schema}}})
        })
        .collect();
    document("Tool", spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The copies in the repo are what the code generates (regenerate with
    /// `AGENTMESH_WRITE_SCHEMAS=1 cargo test -p mesh-spec`).
    #[test]
    fn committed_schemas_are_current() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
        for (file, schema) in [
            ("agent.v1alpha1.json", agent()),
            ("tool.v1alpha1.json", tool()),
        ] {
            let text = serde_json::to_string_pretty(&schema).unwrap() + "\n";
            let path = dir.join(file);
            if std::env::var_os("AGENTMESH_WRITE_SCHEMAS").is_some() {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &text).unwrap();
            }
            let committed = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                committed == text,
                "{file} is stale: run AGENTMESH_WRITE_SCHEMAS=1 cargo test -p mesh-spec"
            );
        }
    }

    /// The shipped example and a full tool validate against the schemas,
    /// and a document with a misspelled field does not.
    #[test]
    fn documents_validate_against_the_schemas() {
        let agent_schema = jsonschema::validator_for(&agent()).unwrap();
        let tool_schema = jsonschema::validator_for(&tool()).unwrap();
        let doc: Value = serde_yaml::from_str(
            "apiVersion: agentmesh.dev/v1alpha1\nkind: Agent\nmetadata: {name: a}\nspec:\n  model: {name: m, fallbacks: [n]}\n  tools: [{ref: t}]\n  memory: {type: redis, ttl: 1h, maxHistory: 4}\n",
        )
        .unwrap();
        assert!(
            agent_schema.is_valid(&doc),
            "{:?}",
            agent_schema
                .iter_errors(&doc)
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
        );
        let mut bad = doc.clone();
        bad["spec"]["systemPrompts"] = json!("typo");
        assert!(!agent_schema.is_valid(&bad));
        let tool_doc: Value = serde_yaml::from_str(
            "apiVersion: agentmesh.dev/v1alpha1\nkind: Tool\nmetadata: {name: w}\nspec: {type: api, config: {endpoint: 'http://x/y', method: GET}, timeout: 5s}\n",
        )
        .unwrap();
        assert!(tool_schema.is_valid(&tool_doc));
        let mut bad = tool_doc;
        bad["spec"]["config"]["endpont"] = json!("typo");
        assert!(!tool_schema.is_valid(&bad));
    }

    /// The shipped examples are valid documents: by the schema and by the
    /// typed validation the API applies.
    #[test]
    fn shipped_examples_are_valid() {
        let agent_schema = jsonschema::validator_for(&agent()).unwrap();
        let tool_schema = jsonschema::validator_for(&tool()).unwrap();
        let limits = crate::SpecLimits::default();
        for text in [
            include_str!("../../../services/cli/agents/assistant.yaml"),
            include_str!("../../../services/cli/agents/tools.yaml"),
        ] {
            for document in serde_yaml::Deserializer::from_str(text) {
                let doc: Value = serde::Deserialize::deserialize(document).unwrap();
                let spec = doc["spec"].clone();
                if doc["kind"] == "Tool" {
                    assert!(tool_schema.is_valid(&doc), "{doc}");
                    let proto = serde_json::from_value::<ToolSpecDoc>(spec)
                        .unwrap()
                        .to_proto()
                        .unwrap();
                    crate::validate_tool_spec("spec", &proto, &limits).unwrap();
                } else {
                    assert!(agent_schema.is_valid(&doc), "{doc}");
                    let proto = serde_json::from_value::<AgentSpecDoc>(spec)
                        .unwrap()
                        .to_proto()
                        .unwrap();
                    crate::validate_agent_spec(&proto, &limits).unwrap();
                }
            }
        }
    }
}
