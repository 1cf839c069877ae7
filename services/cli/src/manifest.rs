//! Resource files for `apply -f`: YAML or JSON, one or several documents
//! per file, a file or a directory of them. Each document is
//! `{apiVersion, kind, metadata: {name}, spec}`.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

pub use mesh_spec::manifest::Resource;

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

/// Parses one file's documents (see [`mesh_spec::manifest`]).
pub fn parse(text: &str) -> anyhow::Result<Vec<(usize, Resource)>> {
    Ok(mesh_spec::manifest::parse_documents(text)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_example_parses() {
        let docs = parse(include_str!("../agents/assistant.yaml")).unwrap();
        assert_eq!(docs[0].1.kind, "Agent");
        assert_eq!(docs[0].1.metadata.name, "assistant");
    }
}
