//! Splitting a document into chunks of at most `tokens` tokens, each
//! overlapping the previous one by `overlap` tokens, so a passage cut at a
//! boundary still appears whole in one chunk. Tokens are the embedding
//! model's word pieces when its tokenizer is loaded (a chunk then always fits
//! the model), else whitespace-separated words.

use std::sync::Arc;

use tokenizers::Tokenizer;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkSpec {
    pub tokens: usize,
    pub overlap: usize,
}

#[derive(Clone)]
pub enum Tokens {
    /// The model's tokenizer, without padding or truncation.
    Model(Arc<Tokenizer>),
    Words,
}

impl Tokens {
    /// Byte spans of the tokens of `text`.
    fn spans(&self, text: &str) -> Vec<(usize, usize)> {
        match self {
            Self::Model(tokenizer) => match tokenizer.encode(text, false) {
                Ok(encoding) => encoding
                    .get_offsets()
                    .iter()
                    .copied()
                    .filter(|(start, end)| end > start)
                    .collect(),
                Err(error) => {
                    tracing::warn!(%error, "tokenizer failed; chunking by words");
                    word_spans(text)
                }
            },
            Self::Words => word_spans(text),
        }
    }
}

fn word_spans(text: &str) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut start = None;
    for (i, c) in text.char_indices() {
        match (c.is_whitespace(), start) {
            (true, Some(s)) => {
                spans.push((s, i));
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = start {
        spans.push((s, text.len()));
    }
    spans
}

/// The chunks of `text`, in order; never empty for a text with a token.
pub fn chunk(text: &str, spec: ChunkSpec, tokens: &Tokens) -> Vec<String> {
    let spans = tokens.spans(text);
    let size = spec.tokens.max(1);
    let step = size.saturating_sub(spec.overlap).max(1);
    let mut chunks = Vec::new();
    let mut first = 0;
    while first < spans.len() {
        let last = (first + size).min(spans.len()) - 1;
        let (start, end) = (spans[first].0, spans[last].1);
        if let Some(piece) = text.get(start..end) {
            chunks.push(piece.to_owned());
        }
        if last + 1 >= spans.len() {
            break;
        }
        first += step;
    }
    if chunks.is_empty() && !text.trim().is_empty() {
        chunks.push(text.trim().to_owned());
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn words_overlap_by_the_configured_amount() {
        let text = "a b c d e f g h i j";
        let chunks = chunk(
            text,
            ChunkSpec {
                tokens: 4,
                overlap: 2,
            },
            &Tokens::Words,
        );
        assert_eq!(chunks, vec!["a b c d", "c d e f", "e f g h", "g h i j"]);
        let one = chunk(
            "short text",
            ChunkSpec {
                tokens: 10,
                overlap: 2,
            },
            &Tokens::Words,
        );
        assert_eq!(one, vec!["short text"]);
    }

    proptest! {
        // Every word of the text is in some chunk, no chunk is longer than
        // the limit, and the function never panics on any input.
        #[test]
        fn chunks_cover_every_word(text in "\\PC{0,300}", tokens in 1usize..20, overlap in 0usize..20) {
            let spec = ChunkSpec { tokens, overlap: overlap.min(tokens - 1) };
            let chunks = chunk(&text, spec, &Tokens::Words);
            for word in text.split_whitespace() {
                prop_assert!(chunks.iter().any(|c| c.split_whitespace().any(|w| w == word)));
            }
            for c in &chunks {
                prop_assert!(c.split_whitespace().count() <= tokens);
            }
        }
    }
}
