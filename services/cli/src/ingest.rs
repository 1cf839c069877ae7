//! `agentmesh ingest <collection> <folder>`: uploads the folder's text
//! documents to a retrieval collection through the gateway's REST API
//! (`POST /v1/collections/{name}/documents`, which chunks and embeds them
//! before it answers), in batches, with a progress bar over the documents.
//!
//! A document's id is its path relative to the folder (`/`-separated), so
//! ingesting the same folder again updates documents in place and unchanged
//! ones are reported as such. Files whose extension is not listed are
//! skipped; a file over `--max-file-bytes` or not UTF-8 stops the run
//! before anything is uploaded, naming the file.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use crate::api::Api;
use crate::output::Format;

#[derive(clap::Args)]
pub struct IngestArgs {
    /// The collection to upload into.
    collection: String,
    /// The folder of documents (searched recursively).
    folder: PathBuf,
    /// Extensions of the files to upload (comma-separated).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "md,markdown,txt,rst,text"
    )]
    ext: Vec<String>,
    /// Documents per request (the retrieval service refuses more than its
    /// AGENTMESH_RETRIEVAL_MAX_DOCUMENTS_PER_REQUEST).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1000))]
    batch: u32,
    /// The largest file uploaded, in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    max_file_bytes: u64,
    /// Create the collection (default embedding model and chunking) when it
    /// does not exist.
    #[arg(long)]
    create: bool,
}

/// One file to upload.
#[derive(Debug, PartialEq, Eq)]
pub struct Document {
    pub id: String,
    pub text: String,
}

/// The folder's documents with a listed extension, sorted by id.
pub fn collect(folder: &Path, exts: &[String], max_bytes: u64) -> anyhow::Result<Vec<Document>> {
    let wanted: Vec<String> = exts
        .iter()
        .map(|e| e.trim().trim_start_matches('.').to_ascii_lowercase())
        .filter(|e| !e.is_empty())
        .collect();
    if wanted.is_empty() {
        bail!("--ext: name at least one extension");
    }
    let mut docs = Vec::new();
    let mut pending = vec![folder.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries =
            std::fs::read_dir(&dir).with_context(|| format!("read folder {}", dir.display()))?;
        for entry in entries {
            let path = entry?.path();
            let meta = std::fs::metadata(&path)?;
            if meta.is_dir() {
                pending.push(path);
                continue;
            }
            let ext = path
                .extension()
                .and_then(|e| e.to_str())
                .map(str::to_ascii_lowercase);
            if !ext.is_some_and(|e| wanted.contains(&e)) {
                continue;
            }
            if meta.len() > max_bytes {
                bail!(
                    "{}: {} bytes, over --max-file-bytes {max_bytes}",
                    path.display(),
                    meta.len()
                );
            }
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("{}: not UTF-8 text", path.display()))?;
            let id = path
                .strip_prefix(folder)
                .unwrap_or(&path)
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            docs.push(Document { id, text });
        }
    }
    docs.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(docs)
}

/// The request body of one batch.
pub fn batch_body(batch: &[Document]) -> Value {
    json!({
        "documents": batch
            .iter()
            .map(|d| json!({"id": d.id, "text": d.text, "metadata": {"path": d.id}}))
            .collect::<Vec<_>>()
    })
}

/// Totals over the batches' answers.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub documents: u64,
    pub upserted: u64,
    pub unchanged: u64,
    pub chunks: u64,
}

impl Totals {
    pub fn add(&mut self, sent: usize, answer: &Value) {
        self.documents += sent as u64;
        self.upserted += answer["upserted"].as_u64().unwrap_or_default();
        self.unchanged += answer["unchanged"].as_u64().unwrap_or_default();
        self.chunks += answer["chunks"].as_u64().unwrap_or_default();
    }
}

pub async fn run(api: &Api, args: IngestArgs, format: Format) -> anyhow::Result<()> {
    let docs = collect(&args.folder, &args.ext, args.max_file_bytes)?;
    if docs.is_empty() {
        bail!(
            "no files with extension {} under {}",
            args.ext.join(", "),
            args.folder.display()
        );
    }
    match api.collection(&args.collection).await? {
        Some(_) => {}
        None if args.create => {
            api.create_collection(&args.collection).await?;
            if format == Format::Human {
                eprintln!("created collection {}", args.collection);
            }
        }
        None => bail!(
            "no collection {:?}: pass --create to create it",
            args.collection
        ),
    }
    let bar = crate::progress::bar(docs.len() as u64, "documents");
    let mut totals = Totals::default();
    for batch in docs.chunks(args.batch as usize) {
        bar.set_message(batch[0].id.clone());
        let answer = api
            .upsert_documents(&args.collection, &batch_body(batch))
            .await
            .with_context(|| {
                format!(
                    "uploading {}..{} ({} of {} documents were stored)",
                    batch[0].id,
                    batch[batch.len() - 1].id,
                    totals.documents,
                    docs.len()
                )
            })?;
        totals.add(batch.len(), &answer);
        bar.inc(batch.len() as u64);
    }
    bar.finish_and_clear();
    match format {
        Format::Json => println!(
            "{}",
            json!({
                "collection": args.collection,
                "documents": totals.documents,
                "upserted": totals.upserted,
                "unchanged": totals.unchanged,
                "chunks": totals.chunks,
            })
        ),
        Format::Human => println!(
            "{} documents into {}: {} upserted, {} unchanged, {} chunks",
            totals.documents, args.collection, totals.upserted, totals.unchanged, totals.chunks
        ),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, text: &str) {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn the_folder_is_walked_for_listed_extensions_with_relative_ids() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "b.md", "bee");
        write(dir.path(), "a.TXT", "ay");
        write(dir.path(), "guide/deep/c.md", "sea");
        write(dir.path(), "image.png", "not text");
        let exts = vec!["md".to_owned(), ".txt".to_owned()];
        let docs = collect(dir.path(), &exts, 1024).unwrap();
        let ids: Vec<&str> = docs.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["a.TXT", "b.md", "guide/deep/c.md"]);
        assert_eq!(docs[2].text, "sea");
    }

    #[test]
    fn an_oversized_or_binary_file_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "big.md", &"x".repeat(100));
        let err = collect(dir.path(), &["md".into()], 10).unwrap_err();
        assert!(format!("{err:#}").contains("big.md: 100 bytes, over --max-file-bytes 10"));
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("bin.txt"), [0xff, 0xfe, 0x00]).unwrap();
        let err = collect(dir.path(), &["txt".into()], 10).unwrap_err();
        assert!(format!("{err:#}").contains("bin.txt: not UTF-8"), "{err:#}");
        assert!(
            collect(dir.path(), &[" ".into()], 10).is_err(),
            "no extension"
        );
    }

    #[test]
    fn batches_carry_the_path_and_totals_add_up() {
        let docs = [
            Document {
                id: "a.md".into(),
                text: "ay".into(),
            },
            Document {
                id: "b/c.md".into(),
                text: "sea".into(),
            },
        ];
        let body = batch_body(&docs);
        assert_eq!(body["documents"][1]["id"], "b/c.md");
        assert_eq!(body["documents"][1]["metadata"]["path"], "b/c.md");
        let mut totals = Totals::default();
        totals.add(2, &json!({"upserted": 1, "unchanged": 1, "chunks": 3}));
        totals.add(1, &json!({"upserted": 1, "unchanged": 0, "chunks": 2}));
        assert_eq!(
            totals,
            Totals {
                documents: 3,
                upserted: 2,
                unchanged: 1,
                chunks: 5
            }
        );
    }
}
