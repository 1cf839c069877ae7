//! Deterministic "generation": what the simulated model says and how many
//! tokens it counts.
//!
//! The same request always yields the same text, so tests can assert on it.
//! Tokens are approximated as whitespace-separated words: a real tokenizer
//! would count differently, and nothing here may pretend otherwise. This
//! module must stay free of timing and I/O.

use crate::openai::Message;

/// What the model says when the last user message has no words.
const FALLBACK_WORDS: &[&str] = &[
    "the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog",
];

/// The prompt size, counted as whitespace-separated words across every
/// message's text.
pub fn prompt_tokens(messages: &[Message]) -> u32 {
    let words: usize = messages
        .iter()
        .filter_map(|message| message.content.as_ref())
        .map(|content| content.text().split_whitespace().count())
        .sum();
    u32::try_from(words).unwrap_or(u32::MAX)
}

/// The completion's tokens, in order.
///
/// Each token is one word followed by a space, cycling through the words of
/// the last user message. A `seed` rotates the starting word, so different
/// seeds give different (but still reproducible) text.
#[derive(Debug, Clone)]
pub struct Tokens {
    words: Vec<String>,
    start: usize,
}

impl Tokens {
    pub fn new(messages: &[Message], seed: Option<i64>) -> Self {
        let last_user_text = messages
            .iter()
            .rev()
            .find(|message| message.role == "user")
            .and_then(|message| message.content.as_ref())
            .map(|content| content.text())
            .unwrap_or_default();
        let mut words: Vec<String> = last_user_text
            .split_whitespace()
            .map(|word| format!("{word} "))
            .collect();
        if words.is_empty() {
            words = FALLBACK_WORDS
                .iter()
                .map(|word| format!("{word} "))
                .collect();
        }
        // `words` is never empty here, and the length fits an i64.
        let len = i64::try_from(words.len()).unwrap_or(i64::MAX);
        let start = seed.map_or(0, |seed| seed.rem_euclid(len));
        Self {
            words,
            start: usize::try_from(start).unwrap_or(0),
        }
    }

    /// The `index`th token (zero-based).
    pub fn token(&self, index: usize) -> &str {
        &self.words[(self.start + index) % self.words.len()]
    }

    /// Generates up to `max_tokens` tokens, ending early, as OpenAI does,
    /// when the text would contain one of `stops`; the stop sequence itself
    /// is not returned.
    pub fn complete(&self, max_tokens: u32, stops: &[String]) -> Completion {
        let stops: Vec<&str> = stops
            .iter()
            .map(String::as_str)
            .filter(|s| !s.is_empty())
            .collect();
        let longest_stop = stops.iter().map(|s| s.len()).max().unwrap_or(0);
        let mut text = String::new();
        let mut pieces = Vec::new();
        for generated in 1..=max_tokens {
            let before = text.len();
            text.push_str(self.token(generated as usize - 1));
            // A new match must end inside the new token, so only the tail
            // needs searching; this keeps long completions linear.
            let mut from = before.saturating_sub(longest_stop.saturating_sub(1));
            while !text.is_char_boundary(from) {
                from -= 1;
            }
            let hit = stops
                .iter()
                .filter_map(|stop| text[from..].find(stop).map(|at| from + at))
                .min();
            if let Some(at) = hit {
                pieces.push(text[before..].to_owned());
                return Completion {
                    pieces: truncate_pieces(pieces, at),
                    generated,
                    finish_reason: "stop",
                };
            }
            pieces.push(text[before..].to_owned());
        }
        Completion {
            pieces,
            generated: max_tokens,
            finish_reason: "length",
        }
    }
}

/// A finished (simulated) generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// The text as streamed: one piece per token, the last one cut short
    /// if a stop sequence began inside it.
    pub pieces: Vec<String>,
    /// Tokens generated, counting the one that completed a stop sequence,
    /// as vLLM reports `completion_tokens`.
    pub generated: u32,
    /// `"stop"` when a stop sequence ended generation, else `"length"`.
    pub finish_reason: &'static str,
}

impl Completion {
    pub fn text(&self) -> String {
        self.pieces.concat()
    }
}

/// Keeps the first `keep` bytes of the pieces' concatenation, dropping
/// pieces that end up empty.
fn truncate_pieces(pieces: Vec<String>, keep: usize) -> Vec<String> {
    let mut remaining = keep;
    let mut kept = Vec::with_capacity(pieces.len());
    for mut piece in pieces {
        if remaining == 0 {
            break;
        }
        if piece.len() > remaining {
            // `keep` is a match position, so it falls on a char boundary.
            piece.truncate(remaining);
        }
        remaining -= piece.len();
        kept.push(piece);
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::Content;

    fn message(role: &str, text: &str) -> Message {
        Message {
            role: role.to_owned(),
            content: Some(Content::Text(text.to_owned())),
        }
    }

    #[test]
    fn prompt_tokens_count_words_in_every_message() {
        let messages = [
            message("system", "be brief"),
            message("user", "  hello   there world "),
            Message {
                role: "assistant".to_owned(),
                content: None,
            },
        ];
        assert_eq!(prompt_tokens(&messages), 5);
    }

    #[test]
    fn tokens_cycle_the_last_user_message() {
        let messages = [
            message("user", "ignored earlier turn"),
            message("assistant", "also ignored"),
            message("user", "alpha beta"),
        ];
        let tokens = Tokens::new(&messages, None);
        assert_eq!(
            tokens.complete(5, &[]).text(),
            "alpha beta alpha beta alpha "
        );
    }

    #[test]
    fn empty_message_uses_fallback_words() {
        let tokens = Tokens::new(&[message("user", "   ")], None);
        assert_eq!(tokens.complete(3, &[]).text(), "the quick brown ");
    }

    #[test]
    fn same_input_same_output_and_seed_rotates() {
        let messages = [message("user", "a b c")];
        assert_eq!(
            Tokens::new(&messages, Some(7)).complete(4, &[]).text(),
            Tokens::new(&messages, Some(7)).complete(4, &[]).text()
        );
        assert_eq!(
            Tokens::new(&messages, Some(1)).complete(3, &[]).text(),
            "b c a "
        );
        assert_eq!(
            Tokens::new(&messages, Some(-1)).complete(3, &[]).text(),
            "c a b "
        );
    }

    #[test]
    fn complete_without_stop_runs_to_length() {
        let tokens = Tokens::new(&[message("user", "x y")], None);
        let completion = tokens.complete(3, &[]);
        assert_eq!(completion.pieces, ["x ", "y ", "x "]);
        assert_eq!(completion.generated, 3);
        assert_eq!(completion.finish_reason, "length");
    }

    #[test]
    fn stop_sequence_ends_generation_and_is_not_returned() {
        let tokens = Tokens::new(&[message("user", "one two three four")], None);
        let completion = tokens.complete(10, &["thr".to_owned()]);
        assert_eq!(completion.text(), "one two ");
        assert_eq!(completion.pieces, ["one ", "two "]);
        assert_eq!(completion.generated, 3);
        assert_eq!(completion.finish_reason, "stop");
    }

    #[test]
    fn stop_sequence_spanning_tokens_cuts_earlier_pieces() {
        let tokens = Tokens::new(&[message("user", "ab cd")], None);
        let completion = tokens.complete(10, &["b c".to_owned(), String::new()]);
        assert_eq!(completion.text(), "a");
        assert_eq!(completion.pieces, ["a"]);
        assert_eq!(completion.generated, 2);
        assert_eq!(completion.finish_reason, "stop");
    }

    #[test]
    fn stop_sequence_that_never_appears_is_harmless() {
        let tokens = Tokens::new(&[message("user", "é ü")], None);
        let completion = tokens.complete(4, &["zz".to_owned()]);
        assert_eq!(completion.text(), "é ü é ü ");
        assert_eq!(completion.finish_reason, "length");
    }
}
