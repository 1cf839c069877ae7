//! Resource files for `apply -f`: YAML or JSON, one or several documents
//! per file, a file or a directory of them. Each document is
//! `{apiVersion, kind, metadata: {name}, spec}`.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde::Deserialize;
use serde_json::Value;

pub const API_VERSION: &str = "agentmesh.dev/v1alpha1";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Resource {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: Value,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    pub name: String,
    /// Accepted, as in Kubernetes-style files; not stored yet.
    #[serde(default)]
    #[allow(dead_code)]
    pub labels: std::collections::BTreeMap<String, String>,
}

/// Every resource in `path` (a file, or the `.yaml`/`.yml`/`.json` files
/// of a directory, in name order), with where it came from.
pub fn load(path: &Path) -> anyhow::Result<Vec<(String, Resource)>> {
    let files: Vec<PathBuf> = if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("read directory {}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension()
                    .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
            })
            .collect();
        files.sort();
        files
    } else {
        vec![path.to_owned()]
    };
    let mut resources = Vec::new();
    for file in files {
        let text =
            std::fs::read_to_string(&file).with_context(|| format!("read {}", file.display()))?;
        resources.extend(
            parse(&text)
                .with_context(|| format!("{}", file.display()))?
                .into_iter()
                .map(|(i, r)| (format!("{}#{}", file.display(), i + 1), r)),
        );
    }
    if resources.is_empty() {
        bail!("no resources found in {}", path.display());
    }
    Ok(resources)
}

/// Parses one file's documents (YAML is a superset of JSON).
pub fn parse(text: &str) -> anyhow::Result<Vec<(usize, Resource)>> {
    let mut out = Vec::new();
    for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value = Value::deserialize(document)
            .with_context(|| format!("document {}: not valid YAML", index + 1))?;
        if value.is_null() {
            continue; // an empty document between `---` separators
        }
        let resource: Resource =
            serde_json::from_value(value).with_context(|| format!("document {}", index + 1))?;
        if resource.api_version != API_VERSION {
            bail!(
                "document {}: apiVersion: expected {API_VERSION}, got {:?}",
                index + 1,
                resource.api_version
            );
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
        let docs = parse(text).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1].1.metadata.name, "b");
        assert_eq!(docs[1].1.spec["maxTokens"], 5);
    }

    #[test]
    fn wrong_version_and_unknown_fields_are_errors() {
        let err =
            parse("apiVersion: v9\nkind: Agent\nmetadata: {name: a}\nspec: {}\n").unwrap_err();
        assert!(format!("{err:#}").contains("apiVersion"), "{err:#}");
        let err = parse("apiVersion: agentmesh.dev/v1alpha1\nkind: Agent\nmetadata: {name: a}\nspec: {}\nstatus: {}\n").unwrap_err();
        assert!(format!("{err:#}").contains("status"), "{err:#}");
    }

    #[test]
    fn the_shipped_example_parses() {
        let docs = parse(include_str!("../agents/assistant.yaml")).unwrap();
        assert_eq!(docs[0].1.kind, "Agent");
        assert_eq!(docs[0].1.metadata.name, "assistant");
    }
}
