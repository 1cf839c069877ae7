//! Deterministic embeddings for `/v1/embeddings`: each input's vector is
//! derived from a hash of its text, so the same input always gives the same
//! unit vector and different inputs (almost surely) differ. The vectors mean
//! nothing semantically; nothing here may pretend they do. Tokens are counted
//! as whitespace-separated words, as in `generate`. Free of timing and I/O.

use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::openai::ApiError;

/// The largest `dimensions` a request (or the config) may ask for.
pub const MAX_DIMENSIONS: usize = 8192;

#[derive(Debug, Deserialize)]
struct EmbeddingRequest {
    model: Option<String>,
    input: Option<Value>,
    encoding_format: Option<String>,
    dimensions: Option<usize>,
}

/// Answers an embeddings request body with OpenAI's response shape.
pub fn respond(body: &[u8], served_model: &str, default_dim: usize) -> Result<Value, ApiError> {
    let request: EmbeddingRequest = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid(format!("request body is not valid: {e}"), None))?;
    let model = request
        .model
        .filter(|m| !m.is_empty())
        .ok_or_else(|| ApiError::invalid("model: a non-empty string is required", Some("model")))?;
    if model != served_model {
        return Err(ApiError::model_not_found(&model));
    }
    let inputs = inputs(request.input.as_ref())?;
    let dim = request.dimensions.unwrap_or(default_dim);
    if dim == 0 || dim > MAX_DIMENSIONS {
        return Err(ApiError::invalid(
            format!("dimensions: must be between 1 and {MAX_DIMENSIONS}"),
            Some("dimensions"),
        ));
    }
    let base64 = match request.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::invalid(
                format!("encoding_format: {other:?} is not one of \"float\", \"base64\""),
                Some("encoding_format"),
            ));
        }
    };
    let mut prompt_tokens = 0u64;
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, input)| {
            prompt_tokens += input.tokens;
            let vector = vector(&input.key, dim);
            let embedding = if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
                Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(vector)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    Ok(json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }))
}

struct Input {
    /// What the vector is derived from.
    key: String,
    tokens: u64,
}

/// OpenAI's `input`: a string, an array of strings, an array of token ids,
/// or an array of such arrays.
fn inputs(input: Option<&Value>) -> Result<Vec<Input>, ApiError> {
    let bad = || {
        ApiError::invalid(
            "input: a string, an array of strings or an array of token arrays is required",
            Some("input"),
        )
    };
    let text = |s: &str| Input {
        key: s.to_owned(),
        tokens: s.split_whitespace().count() as u64,
    };
    let ids = |items: &[Value]| -> Option<Input> {
        let ids: Option<Vec<u64>> = items.iter().map(Value::as_u64).collect();
        let ids = ids?;
        Some(Input {
            key: format!("{ids:?}"),
            tokens: ids.len() as u64,
        })
    };
    let out = match input.ok_or_else(bad)? {
        Value::String(s) => vec![text(s)],
        Value::Array(items) if items.is_empty() => return Err(bad()),
        Value::Array(items) if items.iter().all(Value::is_string) => items
            .iter()
            .map(|v| text(v.as_str().unwrap_or_default()))
            .collect(),
        Value::Array(items) if items.iter().all(Value::is_number) => {
            vec![ids(items).ok_or_else(bad)?]
        }
        Value::Array(items) => items
            .iter()
            .map(|v| v.as_array().and_then(|a| ids(a)).ok_or_else(bad))
            .collect::<Result<_, _>>()?,
        _ => return Err(bad()),
    };
    Ok(out)
}

/// A unit vector of `dim` components derived from `key` (FNV-1a seeding a
/// splitmix64 sequence).
pub fn vector(key: &str, dim: usize) -> Vec<f32> {
    let mut state = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let mut raw: Vec<f64> = (0..dim)
        .map(|_| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            // The top 53 bits as a float in [-1, 1).
            ((z >> 11) as f64 / (1u64 << 52) as f64) - 1.0
        })
        .collect();
    let norm = raw.iter().map(|x| x * x).sum::<f64>().sqrt();
    if norm > 0.0 {
        raw.iter_mut().for_each(|x| *x /= norm);
    }
    #[allow(clippy::cast_possible_truncation)] // f32 is the wire precision
    raw.into_iter().map(|x| x as f32).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report
    use super::*;

    #[test]
    fn vectors_are_deterministic_unit_length_and_differ_by_input() {
        let a = vector("hello world", 32);
        assert_eq!(a, vector("hello world", 32));
        assert_ne!(a, vector("hello world!", 32));
        let norm: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
    }

    #[test]
    fn response_has_openai_shape_usage_and_base64() {
        let body = br#"{"model":"m","input":["a b c","d"],"dimensions":8}"#;
        let out = respond(body, "m", 4).unwrap();
        assert_eq!(out["data"].as_array().unwrap().len(), 2);
        assert_eq!(out["data"][1]["index"], 1);
        assert_eq!(out["data"][0]["embedding"].as_array().unwrap().len(), 8);
        assert_eq!(out["usage"]["prompt_tokens"], 4);
        let b64 = respond(
            br#"{"model":"m","input":"x","encoding_format":"base64"}"#,
            "m",
            4,
        )
        .unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64["data"][0]["embedding"].as_str().unwrap())
            .unwrap();
        assert_eq!(bytes.len(), 16);
        assert_eq!(
            f32::from_le_bytes(bytes[..4].try_into().unwrap()),
            vector("x", 4)[0]
        );
    }

    #[test]
    fn bad_input_is_a_400_naming_the_field() {
        for body in [
            &br#"{"model":"m"}"#[..],
            br#"{"model":"m","input":[]}"#,
            br#"{"model":"m","input":[1,"a"]}"#,
            br#"{"model":"m","input":{"x":1}}"#,
        ] {
            let err = respond(body, "m", 4).unwrap_err();
            assert_eq!(err.status.as_u16(), 400);
            assert_eq!(err.param.as_deref(), Some("input"));
        }
        let err = respond(br#"{"model":"m","input":"a","dimensions":0}"#, "m", 4).unwrap_err();
        assert_eq!(err.param.as_deref(), Some("dimensions"));
        let err = respond(br#"{"model":"other","input":"a"}"#, "m", 4).unwrap_err();
        assert_eq!(err.status.as_u16(), 404);
    }
}
