//! Okapi BM25 over the chunks of one collection, kept in memory and rebuilt
//! from the chunk rows when a collection is loaded. Terms are lowercase runs
//! of letters and digits.

use std::collections::HashMap;

const K1: f32 = 1.2;
const B: f32 = 0.75;

#[derive(Debug, Default)]
pub struct Bm25 {
    /// term -> (chunk key -> term frequency)
    postings: HashMap<String, HashMap<u64, u32>>,
    lengths: HashMap<u64, u32>,
    total_length: u64,
}

/// The terms of `text`, in order, with repeats.
pub fn terms(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .map(str::to_lowercase)
}

impl Bm25 {
    pub fn insert(&mut self, key: u64, text: &str) {
        let mut counts: HashMap<String, u32> = HashMap::new();
        let mut length = 0u32;
        for term in terms(text) {
            *counts.entry(term).or_default() += 1;
            length += 1;
        }
        for (term, tf) in counts {
            self.postings.entry(term).or_default().insert(key, tf);
        }
        self.total_length += u64::from(length);
        self.lengths.insert(key, length);
    }

    /// Removes a chunk inserted with the same `text`.
    pub fn remove(&mut self, key: u64, text: &str) {
        let Some(length) = self.lengths.remove(&key) else {
            return;
        };
        self.total_length = self.total_length.saturating_sub(u64::from(length));
        for term in terms(text) {
            if let Some(list) = self.postings.get_mut(&term) {
                list.remove(&key);
                if list.is_empty() {
                    self.postings.remove(&term);
                }
            }
        }
    }

    pub fn len(&self) -> usize {
        self.lengths.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lengths.is_empty()
    }

    /// The `k` best chunks for `query` among those `accept` lets through,
    /// best first; chunks sharing no term with the query are not returned.
    pub fn search(&self, query: &str, k: usize, accept: impl Fn(u64) -> bool) -> Vec<(u64, f32)> {
        let n = self.lengths.len() as f32;
        if n == 0.0 {
            return Vec::new();
        }
        let average = self.total_length as f32 / n;
        let mut query_terms: Vec<String> = terms(query).collect();
        query_terms.sort();
        query_terms.dedup();
        let mut scores: HashMap<u64, f32> = HashMap::new();
        for term in &query_terms {
            let Some(list) = self.postings.get(term) else {
                continue;
            };
            let df = list.len() as f32;
            let idf = (1.0 + (n - df + 0.5) / (df + 0.5)).ln();
            for (&key, &tf) in list {
                if !accept(key) {
                    continue;
                }
                let length = self.lengths.get(&key).copied().unwrap_or(0) as f32;
                let tf = tf as f32;
                let score = idf * tf * (K1 + 1.0) / (tf + K1 * (1.0 - B + B * length / average));
                *scores.entry(key).or_default() += score;
            }
        }
        let mut hits: Vec<(u64, f32)> = scores.into_iter().collect();
        hits.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        hits.truncate(k);
        hits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rare_terms_rank_first_and_removal_forgets() {
        let mut index = Bm25::default();
        index.insert(1, "the cat sat on the mat");
        index.insert(2, "the dog chased the cat");
        index.insert(3, "quantum chromodynamics of the gluon");
        let hits = index.search("gluon cat", 10, |_| true);
        assert_eq!(hits.first().map(|h| h.0), Some(3));
        assert_eq!(hits.len(), 3);
        let only_dogs = index.search("cat", 10, |k| k == 2);
        assert_eq!(only_dogs.iter().map(|h| h.0).collect::<Vec<_>>(), vec![2]);
        index.remove(3, "quantum chromodynamics of the gluon");
        assert!(index.search("gluon", 10, |_| true).is_empty());
        assert_eq!(index.len(), 2);
    }
}
