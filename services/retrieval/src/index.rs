//! The search structures of one collection, derived from its chunk rows:
//! the vectors (exact search) until the collection is larger than
//! `exact_max_chunks`, then an HNSW graph (usearch) instead; the keyword
//! index (tantivy BM25, on disk, see [`crate::keyword`]). Hybrid results are
//! fused with reciprocal rank fusion. The database is the source of truth:
//! everything here can be rebuilt from the rows.
//!
//! A graph saved by an earlier run is memory-mapped (usearch `view`), so a
//! restart neither reads the vectors from the database nor copies the graph
//! into memory. A view is read-only: the first write after it loads the
//! same file fully into memory (one sequential read, no rebuild) and then
//! changes that copy.

use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use usearch::{Index, IndexOptions, MetricKind, ScalarKind};

use crate::keyword::KeywordIndex;

/// What a search returns for one chunk besides its score.
#[derive(Debug, Clone)]
pub struct ChunkEntry {
    pub document_id: Arc<str>,
    pub chunk_index: u32,
    pub text: Arc<str>,
    pub metadata: Arc<BTreeMap<String, String>>,
}

/// All conditions must hold: the metadata value under `key` is one of the
/// listed values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub all: Vec<(String, Vec<String>)>,
}

impl Filter {
    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    pub fn matches(&self, metadata: &BTreeMap<String, String>) -> bool {
        self.all.iter().all(|(key, values)| {
            metadata
                .get(key)
                .is_some_and(|value| values.iter().any(|v| v == value))
        })
    }
}

#[derive(Debug, Clone, Copy)]
pub struct HnswParams {
    pub connectivity: usize,
    pub ef_construction: usize,
    pub ef_search: usize,
    /// Collections at or below this many chunks use exact search only.
    pub exact_max_chunks: usize,
    /// How the graph stores its vectors.
    pub quantization: Quantization,
}

/// The scalar type the HNSW graph stores its vectors as (the rows keep
/// them in f32; exact search uses those). Half-width scalars halve the
/// memory a search walks through, which is what bounds its speed; `f16`
/// keeps 11 significant bits, enough for unit vectors, so its recall is
/// that of `f32`, while `bf16` (8 bits) loses a little. 8-bit integers are
/// not offered: on unit vectors of a few hundred dimensions their recall@10
/// stays under 0.8 at any ef.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quantization {
    F32,
    F16,
    Bf16,
}

impl Quantization {
    pub fn as_str(self) -> &'static str {
        match self {
            Quantization::F32 => "f32",
            Quantization::F16 => "f16",
            Quantization::Bf16 => "bf16",
        }
    }

    fn scalar_kind(self) -> ScalarKind {
        match self {
            Quantization::F32 => ScalarKind::F32,
            Quantization::F16 => ScalarKind::F16,
            Quantization::Bf16 => ScalarKind::BF16,
        }
    }
}

impl std::fmt::Display for Quantization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Quantization {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f32" => Ok(Quantization::F32),
            "f16" => Ok(Quantization::F16),
            "bf16" => Ok(Quantization::Bf16),
            other => Err(format!(
                "unknown quantization {other:?}; one of f32, f16, bf16"
            )),
        }
    }
}

/// The metric of every graph: inner product. The service normalises every
/// vector it stores and every query, so the inner product is the cosine
/// similarity, without the two norms a cosine kernel computes per pair.
const METRIC: MetricKind = MetricKind::IP;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Vector,
    Keyword,
    Hybrid,
}

/// What [`CollectionIndex::stage`] prepared for
/// [`CollectionIndex::publish`].
pub struct Staged {
    /// The memory-mapped graph, read into memory to take the change.
    loaded: Option<Index>,
}

pub struct CollectionIndex {
    /// The collection generation these structures reflect.
    pub generation: i64,
    dimension: usize,
    params: HnswParams,
    entries: HashMap<u64, ChunkEntry>,
    /// The vectors while the collection is searched exactly; empty once
    /// the graph (which holds them) exists.
    vectors: HashMap<u64, Vec<f32>>,
    hnsw: Option<Index>,
    /// The file `hnsw` is a read-only memory-mapped view of, if it is one.
    viewed: Option<PathBuf>,
    keyword: KeywordIndex,
}

#[derive(Debug, thiserror::Error)]
#[error("vector index: {0}")]
pub struct IndexError(String);

fn hnsw_error(e: impl std::fmt::Display) -> IndexError {
    IndexError(e.to_string())
}

/// The graph type (usearch's index), for callers that drive it directly
/// (the benchmark).
pub type Hnsw = Index;

/// The SIMD kernel families usearch can run on this CPU (compiled in and
/// supported), for reports.
pub fn simd_available() -> String {
    usearch::hardware_acceleration_available()
}

/// A new empty usearch index (inner product of unit vectors, stored as
/// `params.quantization`).
pub fn new_hnsw(dimension: usize, params: &HnswParams) -> Result<Index, IndexError> {
    Index::new(&IndexOptions {
        dimensions: dimension,
        metric: METRIC,
        quantization: params.quantization.scalar_kind(),
        connectivity: params.connectivity,
        expansion_add: params.ef_construction,
        expansion_search: params.ef_search,
        multi: false,
    })
    .map_err(hnsw_error)
}

/// Adds many vectors to a usearch index from `threads` threads at once.
pub fn bulk_add(index: &Index, items: &[(u64, &[f32])], threads: usize) -> Result<(), IndexError> {
    let threads = threads.max(1);
    index
        .reserve_capacity_and_threads(index.size() + items.len(), threads)
        .map_err(hnsw_error)?;
    let per = items.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(per)
            .map(|part| {
                scope.spawn(move || {
                    for (key, vector) in part {
                        index.add(*key, vector).map_err(hnsw_error)?;
                    }
                    Ok::<(), IndexError>(())
                })
            })
            .collect();
        for handle in handles {
            handle
                .join()
                .map_err(|_| IndexError("index build thread panicked".to_owned()))??;
        }
        Ok(())
    })
}

/// The dot product (the vectors are normalised: cosine similarity).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[derive(PartialEq)]
struct MinScore(f32, u64);
impl Eq for MinScore {}
impl PartialOrd for MinScore {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for MinScore {
    // Reversed: the heap's top is the worst kept hit.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other.0.total_cmp(&self.0).then(self.1.cmp(&other.1))
    }
}

/// Exact top-k by dot product over `vectors`, best first.
pub fn exact_top_k<'a>(
    vectors: impl Iterator<Item = (u64, &'a [f32])>,
    query: &[f32],
    k: usize,
) -> Vec<(u64, f32)> {
    let mut heap = BinaryHeap::with_capacity(k + 1);
    for (key, vector) in vectors {
        let score = dot(query, vector);
        if heap.len() < k {
            heap.push(MinScore(score, key));
        } else if heap.peek().is_some_and(|worst| score > worst.0) {
            heap.pop();
            heap.push(MinScore(score, key));
        }
    }
    let mut hits: Vec<(u64, f32)> = heap.into_iter().map(|m| (m.1, m.0)).collect();
    hits.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    hits
}

/// Reciprocal rank fusion of ranked lists: each key scores the sum of
/// `1 / (k + rank)` over the lists it appears in (rank from 1).
pub fn rrf(lists: &[Vec<(u64, f32)>], k: f32, top: usize) -> Vec<(u64, f32)> {
    let mut scores: HashMap<u64, f32> = HashMap::new();
    for list in lists {
        for (rank, (key, _)) in list.iter().enumerate() {
            *scores.entry(*key).or_default() += 1.0 / (k + rank as f32 + 1.0);
        }
    }
    let mut fused: Vec<(u64, f32)> = scores.into_iter().collect();
    fused.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    fused.truncate(top);
    fused
}

/// One chunk to add: its key (the chunk row id), what search returns, and
/// its normalised vector.
pub struct NewChunk {
    pub key: u64,
    pub entry: ChunkEntry,
    pub vector: Vec<f32>,
}

impl CollectionIndex {
    pub fn new(
        dimension: usize,
        params: HnswParams,
        generation: i64,
        keyword: KeywordIndex,
    ) -> Self {
        Self {
            generation,
            dimension,
            params,
            entries: HashMap::new(),
            vectors: HashMap::new(),
            hnsw: None,
            viewed: None,
            keyword,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn has_hnsw(&self) -> bool {
        self.hnsw.is_some()
    }

    pub fn is_viewed(&self) -> bool {
        self.viewed.is_some()
    }

    /// Applies one committed change (removals, then additions) and brings
    /// the index to `generation`: [`CollectionIndex::stage`], then
    /// [`CollectionIndex::publish`].
    pub fn apply(
        &mut self,
        removed: &[u64],
        added: Vec<NewChunk>,
        generation: i64,
    ) -> Result<(), IndexError> {
        let staged = self.stage(removed, &added, generation)?;
        self.publish(removed, added, generation, staged)
    }

    /// The slow part of a change, which needs only shared access, so
    /// searches go on meanwhile against the state before it: the keyword
    /// index commits it (to disk, not yet visible), and a memory-mapped
    /// graph is read into memory (a view is read-only). Writes to one
    /// collection must not stage concurrently (the caller serialises them).
    pub fn stage(
        &self,
        removed: &[u64],
        added: &[NewChunk],
        generation: i64,
    ) -> Result<Staged, IndexError> {
        self.keyword
            .commit(
                false,
                removed,
                added
                    .iter()
                    .map(|c| (c.key, c.entry.text.as_ref(), c.entry.metadata.as_ref())),
                generation,
            )
            .map_err(hnsw_error)?;
        let loaded = match &self.viewed {
            Some(path) => {
                let index = new_hnsw(self.dimension, &self.params)?;
                index
                    .load(&path.display().to_string())
                    .map_err(hnsw_error)?;
                index.change_expansion_search(self.params.ef_search);
                Some(index)
            }
            None => None,
        };
        Ok(Staged { loaded })
    }

    /// The part of a change that needs exclusive access, after
    /// [`CollectionIndex::stage`]: the keyword reader moves to the new
    /// commit, the graph (or the vectors) and the entries take the change,
    /// and searches see all of it at once. Builds the graph when the
    /// collection crosses the exact-search threshold.
    pub fn publish(
        &mut self,
        removed: &[u64],
        added: Vec<NewChunk>,
        generation: i64,
        staged: Staged,
    ) -> Result<(), IndexError> {
        self.keyword.reload().map_err(hnsw_error)?;
        if let Some(index) = staged.loaded {
            self.hnsw = Some(index);
            self.viewed = None;
        }
        for key in removed {
            self.entries.remove(key);
            self.vectors.remove(key);
            if let Some(hnsw) = &self.hnsw {
                hnsw.remove(*key).map_err(hnsw_error)?;
            }
        }
        match &self.hnsw {
            Some(hnsw) => {
                let items: Vec<(u64, &[f32])> =
                    added.iter().map(|c| (c.key, c.vector.as_slice())).collect();
                bulk_add(hnsw, &items, 2)?;
                for chunk in added {
                    self.entries.insert(chunk.key, chunk.entry);
                }
            }
            None => {
                for chunk in added {
                    self.entries.insert(chunk.key, chunk.entry);
                    self.vectors.insert(chunk.key, chunk.vector);
                }
                self.ensure_hnsw()?;
            }
        }
        self.generation = generation;
        Ok(())
    }

    /// Adds chunks to the entries (and vectors) only: loading, where the
    /// caller then maps or builds the graph and syncs the keyword index,
    /// once. Chunks without a vector are fine when a graph will be mapped.
    pub fn add_without_graph(&mut self, chunks: Vec<NewChunk>) {
        for chunk in chunks {
            self.entries.insert(chunk.key, chunk.entry);
            if !chunk.vector.is_empty() {
                self.vectors.insert(chunk.key, chunk.vector);
            }
        }
    }

    /// Brings the keyword index to this index's chunks when its last commit
    /// is of another generation or holds another number of chunks (a crash
    /// between the database commit and its own, another replica's write);
    /// true when it had to be rebuilt.
    pub fn sync_keyword(&mut self, committed: Option<i64>) -> Result<bool, IndexError> {
        if committed == Some(self.generation)
            && usize::try_from(self.keyword.num_docs()).ok() == Some(self.entries.len())
        {
            return Ok(false);
        }
        self.keyword
            .write(
                true,
                &[],
                self.entries
                    .iter()
                    .map(|(key, e)| (*key, e.text.as_ref(), e.metadata.as_ref())),
                self.generation,
            )
            .map_err(hnsw_error)?;
        Ok(true)
    }

    fn build_hnsw(&mut self) -> Result<(), IndexError> {
        let index = new_hnsw(self.dimension, &self.params)?;
        let items: Vec<(u64, &[f32])> = self
            .vectors
            .iter()
            .map(|(k, v)| (*k, v.as_slice()))
            .collect();
        if items.len() != self.entries.len() {
            return Err(IndexError(format!(
                "{} of {} chunks have a vector; the graph needs them all",
                items.len(),
                self.entries.len()
            )));
        }
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        bulk_add(&index, &items, threads)?;
        self.hnsw = Some(index);
        // The graph holds the vectors now.
        self.vectors = HashMap::new();
        Ok(())
    }

    /// Memory-maps a graph saved by [`CollectionIndex::save_hnsw`] for this
    /// generation instead of building one; false when there is none usable
    /// (missing, unreadable, not of this collection's chunks, or built with
    /// other settings: a graph takes its metric, scalar type and degree from
    /// its file, so one saved before the settings changed is rebuilt).
    pub fn view_hnsw(&mut self, path: &Path) -> bool {
        if !path.exists() || self.entries.len() <= self.params.exact_max_chunks {
            return false;
        }
        let file = path.display().to_string();
        let same_settings = Index::metadata(&file).is_ok_and(|meta| {
            meta.metric == METRIC
                && meta.quantization == self.params.quantization.scalar_kind()
                && usize::try_from(meta.dimensions).ok() == Some(self.dimension)
        });
        if !same_settings {
            tracing::info!(path = %path.display(), "the saved vector index was built with other settings");
            return false;
        }
        let viewed = new_hnsw(self.dimension, &self.params)
            .and_then(|index| {
                index.view(&file).map_err(hnsw_error)?;
                Ok(index)
            })
            .ok()
            .filter(|index| {
                index.size() == self.entries.len()
                    && index.connectivity() == self.params.connectivity
            });
        match viewed {
            Some(index) => {
                index.change_expansion_search(self.params.ef_search);
                self.hnsw = Some(index);
                self.viewed = Some(path.to_owned());
                self.vectors = HashMap::new();
                true
            }
            None => false,
        }
    }

    /// Builds the graph if the collection is large enough and it is missing.
    pub fn ensure_hnsw(&mut self) -> Result<(), IndexError> {
        if self.hnsw.is_none() && self.entries.len() > self.params.exact_max_chunks {
            self.build_hnsw()?;
        }
        Ok(())
    }

    pub fn save_hnsw(&self, path: &Path) -> Result<bool, IndexError> {
        match &self.hnsw {
            Some(index) => {
                index
                    .save(&path.display().to_string())
                    .map_err(hnsw_error)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Every chunk's key, vector and metadata (to rebuild another index).
    pub fn rows(&self) -> Vec<(u64, &[f32], &BTreeMap<String, String>)> {
        self.vectors
            .iter()
            .filter_map(|(key, vector)| {
                self.entries
                    .get(key)
                    .map(|e| (*key, vector.as_slice(), e.metadata.as_ref()))
            })
            .collect()
    }

    pub fn entry(&self, key: u64) -> Option<&ChunkEntry> {
        self.entries.get(&key)
    }

    fn accepts(&self, filter: &Filter, key: u64) -> bool {
        filter.is_empty()
            || self
                .entries
                .get(&key)
                .is_some_and(|e| filter.matches(&e.metadata))
    }

    /// Nearest chunks to `query` (normalised), best first, with cosine
    /// similarity. `ef` overrides the HNSW expansion when non-zero.
    pub fn vector_search(
        &self,
        query: &[f32],
        k: usize,
        filter: &Filter,
        ef: usize,
    ) -> Result<Vec<(u64, f32)>, IndexError> {
        match &self.hnsw {
            Some(hnsw) => {
                if ef > 0 && ef != hnsw.expansion_search() {
                    hnsw.change_expansion_search(ef);
                }
                let matches = if filter.is_empty() {
                    hnsw.search(query, k)
                } else {
                    hnsw.filtered_search(query, k, |key| self.accepts(filter, key))
                }
                .map_err(hnsw_error)?;
                Ok(matches
                    .keys
                    .into_iter()
                    .zip(matches.distances)
                    .map(|(key, distance)| (key, 1.0 - distance))
                    .collect())
            }
            None => Ok(exact_top_k(
                self.vectors
                    .iter()
                    .filter(|(key, _)| self.accepts(filter, **key))
                    .map(|(key, v)| (*key, v.as_slice())),
                query,
                k,
            )),
        }
    }

    pub fn keyword_search(
        &self,
        query: &str,
        k: usize,
        filter: &Filter,
    ) -> Result<Vec<(u64, f32)>, IndexError> {
        self.keyword.search(query, k, filter).map_err(hnsw_error)
    }

    /// One search in `mode`. Hybrid fuses the vector and keyword lists,
    /// each `candidates` long, by reciprocal rank.
    #[allow(clippy::too_many_arguments)]
    pub fn search(
        &self,
        mode: Mode,
        text: &str,
        vector: Option<&[f32]>,
        k: usize,
        filter: &Filter,
        ef: usize,
        rrf_k: f32,
    ) -> Result<Vec<(u64, f32)>, IndexError> {
        match (mode, vector) {
            (Mode::Keyword, _) | (Mode::Hybrid, None) => self.keyword_search(text, k, filter),
            (Mode::Vector, Some(v)) => self.vector_search(v, k, filter, ef),
            (Mode::Vector, None) => Ok(Vec::new()),
            (Mode::Hybrid, Some(v)) => {
                let candidates = (k * 4).max(50);
                let by_vector = self.vector_search(v, candidates, filter, ef)?;
                let by_keyword = self.keyword_search(text, candidates, filter)?;
                Ok(rrf(&[by_vector, by_keyword], rrf_k, k))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(doc: &str, text: &str, tag: &str) -> ChunkEntry {
        ChunkEntry {
            document_id: doc.into(),
            chunk_index: 0,
            text: text.into(),
            metadata: Arc::new(BTreeMap::from([("tag".to_owned(), tag.to_owned())])),
        }
    }

    fn unit(i: usize, dim: usize) -> Vec<f32> {
        let mut v = vec![0.0; dim];
        v[i % dim] = 1.0;
        v
    }

    #[test]
    fn rrf_rewards_agreement() {
        let fused = rrf(
            &[vec![(1, 0.9), (2, 0.8)], vec![(2, 5.0), (3, 4.0)]],
            60.0,
            10,
        );
        assert_eq!(fused.first().map(|f| f.0), Some(2));
        assert_eq!(fused.len(), 3);
    }

    #[test]
    fn exact_and_hnsw_agree_and_filters_apply() {
        let dim = 8;
        let params = HnswParams {
            connectivity: 8,
            ef_construction: 64,
            ef_search: 64,
            exact_max_chunks: 10,
            quantization: Quantization::F16,
        };
        let dir = tempfile::tempdir().unwrap();
        let keyword = |name: &str| {
            crate::keyword::KeywordIndex::open(
                &dir.path().join(name),
                crate::keyword::MIN_WRITER_MEMORY_BYTES,
            )
            .unwrap()
            .0
        };
        let mut index = CollectionIndex::new(dim, params, 1, keyword("a"));
        let chunks = (0..40u64)
            .map(|i| NewChunk {
                key: i,
                entry: entry(
                    &format!("d{i}"),
                    &format!("word{i}"),
                    if i % 2 == 0 { "even" } else { "odd" },
                ),
                vector: unit(i as usize, dim),
            })
            .collect();
        index.apply(&[], chunks, 2).unwrap();
        assert!(index.has_hnsw(), "crossing the threshold builds the graph");
        let query = unit(3, dim);
        let hits = index
            .vector_search(&query, 5, &Filter::default(), 0)
            .unwrap();
        assert!((hits[0].1 - 1.0).abs() < 1e-5);
        assert_eq!(hits[0].0 % 8, 3);
        let odd = Filter {
            all: vec![("tag".to_owned(), vec!["even".to_owned()])],
        };
        let hits = index.vector_search(&query, 5, &odd, 0).unwrap();
        assert!(hits.iter().all(|(k, _)| k % 2 == 0), "{hits:?}");
        index.apply(&[3, 11, 19, 27, 35], Vec::new(), 3).unwrap();
        let hits = index
            .vector_search(&query, 5, &Filter::default(), 0)
            .unwrap();
        assert!(
            hits.iter().all(|(_, s)| *s < 0.5),
            "removed keys are gone: {hits:?}"
        );
        let words = index
            .keyword_search("word4", 3, &Filter::default())
            .unwrap();
        assert_eq!(words.first().map(|w| w.0), Some(4));
        assert!(
            index
                .keyword_search("word3", 3, &Filter::default())
                .unwrap()
                .is_empty(),
            "a removed chunk is gone from the keyword index"
        );

        // Saved, then mapped by a fresh index: searchable read-only, and
        // the first write loads it into memory and applies.
        let path = dir.path().join("graph.usearch");
        assert!(index.save_hnsw(&path).unwrap());
        let mut mapped = CollectionIndex::new(dim, params, 3, keyword("b"));
        mapped.add_without_graph(
            (0..40u64)
                .filter(|i| ![3, 11, 19, 27, 35].contains(i))
                .map(|i| NewChunk {
                    key: i,
                    entry: entry(&format!("d{i}"), &format!("word{i}"), "x"),
                    vector: Vec::new(),
                })
                .collect(),
        );
        assert!(mapped.view_hnsw(&path));
        assert!(mapped.is_viewed());
        assert!(
            mapped.sync_keyword(None).unwrap(),
            "a new keyword index is rebuilt"
        );
        assert!(!mapped.sync_keyword(Some(3)).unwrap(), "then it is current");
        let query = unit(5, dim);
        let hits = mapped
            .vector_search(&query, 3, &Filter::default(), 0)
            .unwrap();
        assert_eq!(hits[0].0 % 8, 5);
        mapped
            .apply(
                &[5],
                vec![NewChunk {
                    key: 100,
                    entry: entry("d100", "fresh", "x"),
                    vector: unit(5, dim),
                }],
                4,
            )
            .unwrap();
        assert!(!mapped.is_viewed(), "the first write loads the graph");
        assert_eq!(
            mapped.hnsw.as_ref().map(|h| h.scalar_kind()),
            Some(ScalarKind::F16),
            "the loaded graph keeps the configured scalar type"
        );
        let hits = mapped
            .vector_search(&query, 40, &Filter::default(), 0)
            .unwrap();
        assert!(hits.iter().any(|h| h.0 == 100), "{hits:?}");
        assert!(hits.iter().all(|h| h.0 != 5), "{hits:?}");
        assert_eq!(
            mapped
                .keyword_search("fresh", 3, &Filter::default())
                .unwrap()
                .first()
                .map(|w| w.0),
            Some(100)
        );
    }

    #[test]
    fn a_graph_saved_with_other_settings_is_not_mapped() {
        let dim = 8;
        let params = HnswParams {
            connectivity: 8,
            ef_construction: 64,
            ef_search: 64,
            exact_max_chunks: 4,
            quantization: Quantization::F32,
        };
        let dir = tempfile::tempdir().unwrap();
        let keyword = |name: &str| {
            crate::keyword::KeywordIndex::open(
                &dir.path().join(name),
                crate::keyword::MIN_WRITER_MEMORY_BYTES,
            )
            .unwrap()
            .0
        };
        let chunks = |with_vectors: bool| -> Vec<NewChunk> {
            (0..16u64)
                .map(|i| NewChunk {
                    key: i,
                    entry: entry(&format!("d{i}"), "text", "x"),
                    vector: if with_vectors {
                        unit(i as usize, dim)
                    } else {
                        Vec::new()
                    },
                })
                .collect()
        };
        let mut index = CollectionIndex::new(dim, params, 1, keyword("a"));
        index.apply(&[], chunks(true), 2).unwrap();
        let path = dir.path().join("graph.usearch");
        assert!(index.save_hnsw(&path).unwrap());
        drop(index);

        let reopen = |params: HnswParams, name: &str| {
            let mut index = CollectionIndex::new(dim, params, 2, keyword(name));
            index.add_without_graph(chunks(false));
            index.view_hnsw(&path)
        };
        assert!(reopen(params, "b"), "the same settings map the saved graph");
        let f16 = HnswParams {
            quantization: Quantization::F16,
            ..params
        };
        assert!(!reopen(f16, "c"), "another scalar type rebuilds");
        let wider = HnswParams {
            connectivity: 12,
            ..params
        };
        assert!(!reopen(wider, "d"), "another degree rebuilds");

        // Rebuilt from the rows with the new settings, saved, then mapped.
        let mut rebuilt = CollectionIndex::new(dim, f16, 2, keyword("e"));
        rebuilt.add_without_graph(chunks(true));
        assert!(!rebuilt.view_hnsw(&path));
        rebuilt.ensure_hnsw().unwrap();
        assert!(rebuilt.save_hnsw(&path).unwrap());
        drop(rebuilt);
        assert!(reopen(f16, "f"), "the rebuilt graph maps");
        assert!(!reopen(params, "g"), "and the old settings no longer do");
    }

    #[test]
    fn quantization_parses_and_names_the_choices() {
        assert_eq!("F16".parse::<Quantization>(), Ok(Quantization::F16));
        assert_eq!("bf16".parse::<Quantization>(), Ok(Quantization::Bf16));
        assert_eq!("f32".parse::<Quantization>(), Ok(Quantization::F32));
        let err = "i8".parse::<Quantization>().unwrap_err();
        assert!(err.contains("f32, f16, bf16"), "{err}");
    }

    #[test]
    fn a_staged_change_is_searched_only_once_published() {
        let dim = 4;
        let params = HnswParams {
            connectivity: 8,
            ef_construction: 32,
            ef_search: 32,
            exact_max_chunks: 100,
            quantization: Quantization::F16,
        };
        let dir = tempfile::tempdir().unwrap();
        let (keyword, _) = crate::keyword::KeywordIndex::open(
            &dir.path().join("k"),
            crate::keyword::MIN_WRITER_MEMORY_BYTES,
        )
        .unwrap();
        let mut index = CollectionIndex::new(dim, params, 1, keyword);
        let chunk = |key: u64, text: &str| NewChunk {
            key,
            entry: entry(&format!("d{key}"), text, "x"),
            vector: unit(0, dim),
        };
        index.apply(&[], vec![chunk(1, "old words")], 2).unwrap();
        let added = vec![chunk(2, "new words")];
        let staged = index.stage(&[1], &added, 3).unwrap();
        let all = Filter::default();
        let seen = |index: &CollectionIndex| {
            (
                index
                    .vector_search(&unit(0, dim), 5, &all, 0)
                    .unwrap()
                    .into_iter()
                    .map(|h| h.0)
                    .collect::<Vec<_>>(),
                index
                    .keyword_search("words", 5, &all)
                    .unwrap()
                    .into_iter()
                    .map(|h| h.0)
                    .collect::<Vec<_>>(),
            )
        };
        assert_eq!(seen(&index), (vec![1], vec![1]), "staged, not published");
        assert_eq!(index.generation, 2);
        index.publish(&[1], added, 3, staged).unwrap();
        assert_eq!(seen(&index), (vec![2], vec![2]));
        assert_eq!(index.generation, 3);
    }
}
