//! The keyword (BM25) index of one collection: a tantivy index in its own
//! folder under the service's data dir. Each chunk is one tantivy document
//! with its key (the chunk row id, indexed for deletes and a fast field for
//! the hits), its text (tantivy's default tokenizer: alphanumeric runs,
//! lowercased) and its metadata as exact `key=value` terms, so a metadata
//! filter is part of the query instead of a pass over the hits.
//!
//! Every commit carries the collection generation it reflects as its
//! payload. The database stays the source of truth: an index whose last
//! commit is not the collection's generation (a crash between the database
//! commit and this one, another replica's write) is rebuilt from the rows
//! when the collection is loaded.
//!
//! Writes go through one `IndexWriter` per index, opened on the first write
//! (a collection that is only searched holds no writer, no threads and no
//! lock) with one indexing thread, one merge thread and a configurable
//! memory budget. The reader reloads by hand: [`KeywordIndex::commit`]
//! makes a change durable while searches go on against the last reloaded
//! state, and [`KeywordIndex::reload`] then makes it visible, so the caller
//! decides when (together with the vector side of the same change). Nothing
//! here may block an async task for long: callers run it on blocking
//! threads.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tantivy::collector::TopDocs;
use tantivy::indexer::IndexWriterOptions;
use tantivy::query::{BooleanQuery, ConstScoreQuery, Occur, Query, TermQuery};
use tantivy::schema::{
    Field, IndexRecordOption, NumericOptions, STRING, Schema, TextFieldIndexing, TextOptions,
};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};

use crate::index::Filter;

/// Smallest writer memory budget tantivy accepts per indexing thread (its
/// `MEMORY_BUDGET_NUM_BYTES_MIN`, which it does not export).
pub const MIN_WRITER_MEMORY_BYTES: usize = 15_000_000;

const KEY: &str = "key";
const TEXT: &str = "text";
const META: &str = "meta";

#[derive(Debug, thiserror::Error)]
#[error("keyword index {path}: {source}")]
pub struct KeywordError {
    path: String,
    source: tantivy::TantivyError,
}

pub struct KeywordIndex {
    dir: PathBuf,
    index: Index,
    reader: IndexReader,
    /// Behind a lock of its own so a commit needs only shared access to
    /// the index: searches keep running while a commit syncs to disk.
    writer: std::sync::Mutex<Option<IndexWriter>>,
    memory_budget: usize,
    key: Field,
    text: Field,
    meta: Field,
}

fn schema() -> Schema {
    let mut builder = Schema::builder();
    builder.add_u64_field(KEY, NumericOptions::default().set_indexed().set_fast());
    // Term frequencies for BM25; no positions (no phrase queries) and
    // nothing stored (the chunk rows hold the text).
    builder.add_text_field(
        TEXT,
        TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer("default")
                .set_index_option(IndexRecordOption::WithFreqs),
        ),
    );
    builder.add_text_field(META, STRING);
    builder.build()
}

/// The term of one metadata pair: the key's length first, so no key and
/// value can run into another pair's term.
fn meta_term(key: &str, value: &str) -> String {
    format!("{}:{key}{value}", key.len())
}

impl KeywordIndex {
    /// Opens the index in `dir`, creating it when missing (or recreating it
    /// when what is there cannot be opened with this schema: it is derived
    /// data). Returns it with the generation of its last commit.
    pub fn open(dir: &Path, memory_budget: usize) -> Result<(Self, Option<i64>), KeywordError> {
        let error = |source| KeywordError {
            path: dir.display().to_string(),
            source,
        };
        let io = |e: std::io::Error| error(tantivy::TantivyError::from(e));
        std::fs::create_dir_all(dir).map_err(io)?;
        let schema = schema();
        let index = match tantivy::directory::MmapDirectory::open(dir)
            .map_err(|e| error(e.into()))
            .and_then(|d| Index::open_or_create(d, schema.clone()).map_err(error))
        {
            Ok(index) => index,
            Err(failed) => {
                tracing::warn!(error = %failed, "recreating the keyword index");
                std::fs::remove_dir_all(dir).map_err(io)?;
                std::fs::create_dir_all(dir).map_err(io)?;
                Index::create_in_dir(dir, schema.clone()).map_err(error)?
            }
        };
        let generation = index
            .load_metas()
            .map_err(error)?
            .payload
            .and_then(|p| p.parse::<i64>().ok());
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(error)?;
        let field = |name| schema.get_field(name).map_err(error);
        Ok((
            Self {
                dir: dir.to_owned(),
                key: field(KEY)?,
                text: field(TEXT)?,
                meta: field(META)?,
                index,
                reader,
                writer: std::sync::Mutex::new(None),
                memory_budget: memory_budget.max(MIN_WRITER_MEMORY_BYTES),
            },
            generation,
        ))
    }

    fn error(&self, source: tantivy::TantivyError) -> KeywordError {
        KeywordError {
            path: self.dir.display().to_string(),
            source,
        }
    }

    /// Chunks searchable now (as of the last commit).
    pub fn num_docs(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// [`KeywordIndex::commit`], then [`KeywordIndex::reload`].
    pub fn write<'a>(
        &self,
        clear: bool,
        removed: &[u64],
        added: impl IntoIterator<Item = (u64, &'a str, &'a BTreeMap<String, String>)>,
        generation: i64,
    ) -> Result<(), KeywordError> {
        self.commit(clear, removed, added, generation)?;
        self.reload()
    }

    /// Makes the last commit visible to searches.
    pub fn reload(&self) -> Result<(), KeywordError> {
        self.reader.reload().map_err(|e| self.error(e))
    }

    /// Applies one change and commits it before returning: all chunks
    /// first when `clear` (a rebuild), then `removed`, then `added`; the
    /// commit records `generation`. Searches see it after the next
    /// [`KeywordIndex::reload`]. On failure nothing of the change is
    /// committed (the writer and what it staged are dropped). Commits are
    /// serialised by the writer's lock.
    pub fn commit<'a>(
        &self,
        clear: bool,
        removed: &[u64],
        added: impl IntoIterator<Item = (u64, &'a str, &'a BTreeMap<String, String>)>,
        generation: i64,
    ) -> Result<(), KeywordError> {
        let mut writer = self
            .writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let result = self.commit_inner(&mut writer, clear, removed, added, generation);
        if result.is_err() {
            *writer = None;
        }
        result
    }

    fn commit_inner<'a>(
        &self,
        slot: &mut Option<IndexWriter>,
        clear: bool,
        removed: &[u64],
        added: impl IntoIterator<Item = (u64, &'a str, &'a BTreeMap<String, String>)>,
        generation: i64,
    ) -> Result<(), KeywordError> {
        if slot.is_none() {
            let options = IndexWriterOptions::builder()
                .num_worker_threads(1)
                .num_merge_threads(1)
                .memory_budget_per_thread(self.memory_budget)
                .build();
            let writer = self
                .index
                .writer_with_options(options)
                .map_err(|e| self.error(e))?;
            *slot = Some(writer);
        }
        let (key_field, text_field, meta_field) = (self.key, self.text, self.meta);
        let dir = &self.dir;
        let error = |source| KeywordError {
            path: dir.display().to_string(),
            source,
        };
        let writer = slot.as_mut().expect("opened above");
        if clear {
            writer.delete_all_documents().map_err(error)?;
        }
        for key in removed {
            writer.delete_term(Term::from_field_u64(key_field, *key));
        }
        for (key, text, metadata) in added {
            let mut doc = TantivyDocument::new();
            doc.add_u64(key_field, key);
            doc.add_text(text_field, text);
            for (k, v) in metadata {
                doc.add_text(meta_field, meta_term(k, v));
            }
            writer.add_document(doc).map_err(error)?;
        }
        let mut prepared = writer.prepare_commit().map_err(error)?;
        prepared.set_payload(&generation.to_string());
        prepared.commit().map_err(error)?;
        Ok(())
    }

    /// The `k` best chunks for `query` by BM25 among those whose metadata
    /// match `filter`, best first; chunks sharing no term with the query
    /// are not returned.
    pub fn search(
        &self,
        query: &str,
        k: usize,
        filter: &Filter,
    ) -> Result<Vec<(u64, f32)>, KeywordError> {
        if k == 0 {
            return Ok(Vec::new());
        }
        let mut analyzer = self
            .index
            .tokenizer_for_field(self.text)
            .map_err(|e| self.error(e))?;
        let mut terms: Vec<String> = Vec::new();
        let mut stream = analyzer.token_stream(query);
        while let Some(token) = stream.next() {
            terms.push(token.text.clone());
        }
        terms.sort();
        terms.dedup();
        if terms.is_empty() {
            return Ok(Vec::new());
        }
        let text: Box<dyn Query> = Box::new(BooleanQuery::new(
            terms
                .iter()
                .map(|t| {
                    let q: Box<dyn Query> = Box::new(TermQuery::new(
                        Term::from_field_text(self.text, t),
                        IndexRecordOption::WithFreqs,
                    ));
                    (Occur::Should, q)
                })
                .collect(),
        ));
        let query: Box<dyn Query> = if filter.is_empty() {
            text
        } else {
            let mut clauses = vec![(Occur::Must, text)];
            for (key, values) in &filter.all {
                let any: Box<dyn Query> = Box::new(BooleanQuery::new(
                    values
                        .iter()
                        .map(|v| {
                            let q: Box<dyn Query> = Box::new(TermQuery::new(
                                Term::from_field_text(self.meta, &meta_term(key, v)),
                                IndexRecordOption::Basic,
                            ));
                            (Occur::Should, q)
                        })
                        .collect(),
                ));
                // A condition selects; it adds nothing to the score.
                clauses.push((Occur::Must, Box::new(ConstScoreQuery::new(any, 0.0))));
            }
            Box::new(BooleanQuery::new(clauses))
        };
        let searcher = self.reader.searcher();
        let top = searcher
            .search(&query, &TopDocs::with_limit(k).order_by_score())
            .map_err(|e| self.error(e))?;
        let mut keys = Vec::with_capacity(top.len());
        let mut columns = std::collections::HashMap::new();
        for (score, address) in top {
            let column = match columns.entry(address.segment_ord) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => e.insert(
                    searcher
                        .segment_reader(address.segment_ord)
                        .fast_fields()
                        .u64(KEY)
                        .map_err(|e| self.error(e))?,
                ),
            };
            if let Some(key) = column.first(address.doc_id) {
                keys.push((key, score));
            }
        }
        Ok(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(tag: &str) -> BTreeMap<String, String> {
        BTreeMap::from([("tag".to_owned(), tag.to_owned())])
    }

    #[test]
    fn rare_terms_rank_first_filters_select_and_removal_forgets() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("kw");
        let (index, generation) =
            KeywordIndex::open(&path, MIN_WRITER_MEMORY_BYTES).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(generation, None);
        let (a, b) = (meta("a"), meta("b"));
        index
            .write(
                false,
                &[],
                [
                    (1, "The cat sat on the mat", &a),
                    (2, "the dog chased the CAT", &b),
                    (3, "quantum chromodynamics of the gluon", &a),
                ],
                7,
            )
            .unwrap_or_else(|e| panic!("{e}"));
        let all = Filter::default();
        let hits = index
            .search("gluon cat", 10, &all)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(hits.first().map(|h| h.0), Some(3), "{hits:?}");
        assert_eq!(hits.len(), 3);
        let only_b = Filter {
            all: vec![("tag".to_owned(), vec!["b".to_owned()])],
        };
        let hits = index
            .search("cat", 10, &only_b)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(hits.iter().map(|h| h.0).collect::<Vec<_>>(), vec![2]);
        assert!(
            index
                .search("!!! ...", 10, &all)
                .unwrap_or_else(|e| panic!("{e}"))
                .is_empty()
        );
        index
            .write(false, &[3], [], 8)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            index
                .search("gluon", 10, &all)
                .unwrap_or_else(|e| panic!("{e}"))
                .is_empty()
        );
        drop(index);

        // Reopened: the commits are on disk, with their generation.
        let (index, generation) =
            KeywordIndex::open(&path, MIN_WRITER_MEMORY_BYTES).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(generation, Some(8));
        assert_eq!(index.num_docs(), 2);
        let hits = index
            .search("mat", 10, &all)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(hits.iter().map(|h| h.0).collect::<Vec<_>>(), vec![1]);
    }

    #[test]
    fn a_commit_is_searched_only_after_the_reload() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (index, _) = KeywordIndex::open(&dir.path().join("kw"), MIN_WRITER_MEMORY_BYTES)
            .unwrap_or_else(|e| panic!("{e}"));
        let none = BTreeMap::new();
        let all = Filter::default();
        index
            .write(false, &[], [(1, "first words", &none)], 1)
            .unwrap_or_else(|e| panic!("{e}"));
        index
            .commit(false, &[1], [(2, "second words", &none)], 2)
            .unwrap_or_else(|e| panic!("{e}"));
        let keys = |q: &str| -> Vec<u64> {
            index
                .search(q, 10, &all)
                .unwrap_or_else(|e| panic!("{e}"))
                .into_iter()
                .map(|h| h.0)
                .collect()
        };
        assert_eq!(keys("words"), vec![1], "committed, not yet reloaded");
        index.reload().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(keys("words"), vec![2]);
    }
}
