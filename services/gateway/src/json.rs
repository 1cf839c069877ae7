//! Request bodies: JSON only, bounded in size, unknown fields refused, and
//! every decoding error names the field path (`spec.temperature`).

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::header;
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use mesh_runtime::ErrorCode;

/// Maximum nesting of request JSON; deeper documents are refused before
/// they reach serde (which would recurse).
pub const MAX_JSON_DEPTH: usize = 32;

pub struct ValidJson<T>(pub T);

impl<S, T> FromRequest<S> for ValidJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| {
                let ct = ct.split(';').next().unwrap_or_default().trim();
                ct.eq_ignore_ascii_case("application/json") || ct.ends_with("+json")
            });
        if !is_json {
            return Err(ApiError::new(
                ErrorCode::InvalidArgument,
                "body: Content-Type must be application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    ErrorCode::PayloadTooLarge,
                    "body: exceeds the request size limit",
                )
            } else {
                ApiError::new(ErrorCode::InvalidArgument, format!("body: {rejection}"))
            }
        })?;
        parse(&bytes).map(ValidJson)
    }
}

/// Decodes `bytes`, naming the failing field path in the error.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if depth(bytes) > MAX_JSON_DEPTH {
        return Err(ApiError::invalid(
            "body",
            format!("JSON nests deeper than {MAX_JSON_DEPTH} levels"),
        ));
    }
    // PostgreSQL stores no NUL in text or jsonb: a `\u0000` would reach
    // the store and fail there as an outage (503), not as the caller's
    // mistake (schemathesis sent one in an agent spec).
    if has_escaped_nul(bytes) {
        return Err(ApiError::invalid(
            "body",
            "strings must not contain NUL (\\u0000)",
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize::<_, T>(&mut de) {
        Ok(value) => de
            .end()
            .map(|()| value)
            .map_err(|e| ApiError::invalid("body", format!("trailing characters after JSON: {e}"))),
        Err(error) => {
            let path = error.path().to_string();
            let inner = error.into_inner();
            if inner.is_syntax() || inner.is_eof() {
                Err(ApiError::invalid(
                    "body",
                    format!("malformed JSON: {inner}"),
                ))
            } else if path == "." || path.is_empty() {
                Err(ApiError::invalid("body", inner))
            } else {
                Err(ApiError::invalid(&path, inner))
            }
        }
    }
}

/// Whether a JSON string in `bytes` holds the escape `\u0000` (a raw NUL
/// is not valid JSON at all; serde refuses it).
fn has_escaped_nul(bytes: &[u8]) -> bool {
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            if bytes.get(i + 1) == Some(&b'u') && bytes.get(i + 2..i + 6) == Some(&b"0000"[..]) {
                return true;
            }
            // Skip the escaped character, so `\\u0000` (a backslash, then
            // the text u0000) is not read as an escape.
            i += 2;
        } else {
            i += 1;
        }
    }
    false
}

/// Bracket nesting depth, ignoring brackets inside strings.
fn depth(bytes: &[u8]) -> usize {
    let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                max = max.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct Spec {
        #[allow(dead_code)]
        model: String,
        #[allow(dead_code)]
        max_tokens: Option<u32>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Doc {
        #[allow(dead_code)]
        spec: Spec,
    }

    #[test]
    fn errors_name_the_field() {
        let e = parse::<Doc>(br#"{"spec": {"model": "m", "maxTokens": -1}}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("spec.maxTokens"), "{}", e.message);
        let e = parse::<Doc>(br#"{"spec": {"model": "m", "colour": 1}}"#).unwrap_err();
        assert!(
            e.message.contains("unknown field `colour`"),
            "{}",
            e.message
        );
        assert_eq!(e.field.as_deref(), Some("spec.colour"));
        let e = parse::<Doc>(br#"{"spec": "#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("body"));
        assert!(e.message.contains("malformed JSON"));
    }

    proptest::proptest! {
        /// Whatever the bytes, decoding answers a value or a 400 that names
        /// a field: never a panic, never another status.
        #[test]
        fn any_body_is_a_value_or_a_field_named_400(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            if let Err(e) = parse::<mesh_spec::AgentSpecDoc>(&bytes) {
                proptest::prop_assert_eq!(e.code, mesh_runtime::ErrorCode::InvalidArgument);
                proptest::prop_assert!(e.field.is_some_and(|f| !f.is_empty()));
            }
        }

        /// Near-valid documents: every field with every JSON type.
        #[test]
        fn mistyped_fields_name_themselves(
            field in proptest::sample::select(vec!["model", "systemPrompt", "temperature", "maxTokens", "scaling"]),
            value in proptest::sample::select(vec!["null", "1", "-1", "1.5", "\"x\"", "[]", "{}", "true", "1e999"]),
        ) {
            let body = format!("{{\"model\": \"m\", \"{field}\": {value}}}");
            if let Err(e) = parse::<mesh_spec::AgentSpecDoc>(body.as_bytes()) {
                let named = e.field.unwrap_or_default();
                proptest::prop_assert!(named == field || named.starts_with(field) || named == "body", "{} for {}", named, body);
            }
        }
    }

    #[test]
    fn nul_in_a_string_is_refused() {
        let e = parse::<serde_json::Value>(br#"{"a": "x\u0000y"}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("body"), "{}", e.message);
        assert!(e.message.contains("NUL"), "{}", e.message);
        // An escaped backslash before the text u0000 is no NUL.
        assert!(parse::<serde_json::Value>(br#"{"a": "x\\u0000y"}"#).is_ok());
        assert!(parse::<serde_json::Value>(br#"{"a": "\u0001"}"#).is_ok());
    }

    #[test]
    fn deep_nesting_is_refused() {
        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        let e = parse::<serde_json::Value>(deep.as_bytes()).unwrap_err();
        assert!(e.message.contains("deeper"), "{}", e.message);
        // Brackets inside strings do not count.
        let s = format!("{{\"a\": \"{}\"}}", "[".repeat(100));
        assert!(parse::<serde_json::Value>(s.as_bytes()).is_ok());
    }
}
