//! Resource files as `agentmesh apply -f` reads them: YAML or JSON (YAML is
//! a superset of JSON), one or several documents separated by `---`, each
//! `{apiVersion, kind, metadata: {name, labels}, spec}`. The spec stays
//! JSON here: the API types and validates it per kind.
//!
//! This module never reads files; callers pass the text.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::API_VERSION;

/// One document of a resource file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Resource {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    pub name: String,
    /// Accepted, as in Kubernetes-style files; not stored yet.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// A document of a file that is not a resource: `document` is 1-based.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("document {document}: {message}")]
pub struct DocumentError {
    pub document: usize,
    pub message: String,
}

/// The resources of one file's text, each with its 0-based document index;
/// empty documents (between two `---`) are skipped.
pub fn parse_documents(text: &str) -> Result<Vec<(usize, Resource)>, DocumentError> {
    let mut out = Vec::new();
    for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let fail = |message: String| DocumentError {
            document: index + 1,
            message,
        };
        let value =
            Value::deserialize(document).map_err(|e| fail(format!("not valid YAML: {e}")))?;
        if value.is_null() {
            continue;
        }
        let resource: Resource = serde_json::from_value(value).map_err(|e| fail(e.to_string()))?;
        if resource.api_version != API_VERSION {
            return Err(fail(format!(
                "apiVersion: expected {API_VERSION}, got {:?}",
                resource.api_version
            )));
        }
        out.push((index, resource));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_documents_and_empty_ones() {
        let text = "---\napiVersion: agentmesh.dev/v1alpha1\nkind: Agent\nmetadata: {name: a}\nspec: {model: m}\n---\n---\napiVersion: agentmesh.dev/v1alpha1\nkind: Agent\nmetadata:\n  name: b\nspec:\n  model: m\n  maxTokens: 5\n";
        let docs = parse_documents(text).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1].0, 2);
        assert_eq!(docs[1].1.metadata.name, "b");
        assert_eq!(docs[1].1.spec["maxTokens"], 5);
    }

    #[test]
    fn wrong_version_and_unknown_fields_name_the_document() {
        let err = parse_documents("apiVersion: v9\nkind: Agent\nmetadata: {name: a}\nspec: {}\n")
            .unwrap_err();
        assert_eq!(err.document, 1);
        assert!(err.message.contains("apiVersion"), "{err}");
        let err = parse_documents("---\n---\napiVersion: agentmesh.dev/v1alpha1\nkind: Agent\nmetadata: {name: a}\nspec: {}\nstatus: {}\n").unwrap_err();
        assert_eq!(err.document, 2);
        assert!(err.message.contains("status"), "{err}");
    }
}
